/* Manifest files as kubectl reads them: JSON (one object, or a List) or YAML
 * (documents separated by "---", each one object or a List), decoded into
 * cJSON objects that store/k8s.c decodes further. YAML goes through libyaml's
 * event parser; its scalars follow the YAML 1.2 core schema (null, true,
 * false, integers, floats; quoted scalars are always strings).
 *
 * Everything is bounded before it is trusted: nesting depth, number of
 * objects, length of a document; YAML aliases are refused (an alias can
 * expand a small file into an unbounded tree), and so are tags other than
 * the core schema's and keys that are not plain strings or repeat.
 *
 * Runs on any thread; allocates (the result belongs to the caller). */
#ifndef EM_STORE_MANIFEST_H
#define EM_STORE_MANIFEST_H

#include <stddef.h>

struct cJSON;

#define EM_MANIFEST_MAX_OBJECTS 65536u /* objects in one file, Lists flattened */
#define EM_MANIFEST_MAX_DEPTH   64u    /* nesting of mappings and sequences */

/* The format a file name says its text is in: by extension, ".json" JSON,
 * ".yaml" and ".yml" YAML; anything else is no manifest. */
enum em_manifest_format { EM_MANIFEST_NONE = 0, EM_MANIFEST_JSON, EM_MANIFEST_YAML };
enum em_manifest_format em_manifest_format_of(const char *path);

/* Parses <len> bytes of <text> (need not be terminated) in <format>. On
 * success returns 0 and a new cJSON array in <*out> holding every object of
 * the file in order: the items of a List (any kind ending in "List" with an
 * "items" array) stand in its place, empty YAML documents are skipped. Each
 * object is a JSON object; nothing else about it is checked here.
 * On failure returns -EINVAL (or -ENOMEM) with <*out> NULL and one line in
 * <err>: "<name>:<line>: <reason>", the line counted from 1 where the error
 * was found. */
int em_manifest_parse(const char *name, const char *text, size_t len,
                      enum em_manifest_format format, struct cJSON **out, char *err, size_t errlen);

#endif
