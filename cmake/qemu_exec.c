/* Preloaded into the arm64 test programs run under user-mode qemu
 * (cmake/arm64.sh test): an exec of an aarch64 program from inside the
 * emulator becomes an exec of qemu-aarch64-static running that program.
 *
 * qemu-user does not emulate execve: the host kernel gets the aarch64 file
 * and refuses it unless binfmt_misc has a qemu handler, a setting of the
 * whole host that a test run should not make. Criterion's sandbox (BoxFort)
 * starts each test's worker with execl(/proc/self/exe, ...), and some tests
 * run the built programs through the host's /bin/sh; both go through here.
 *
 * cmake/arm64.sh builds it twice, for aarch64 and for the host, into
 * DIR/lib/<triplet>/, and sets LD_PRELOAD=DIR/$LIB/qemu_exec.so: each
 * loader expands $LIB to its own lib/<triplet>, so emulated programs and
 * host programs (the shell of system() and popen()) both get it. Not part
 * of the project's programs. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef EM_QEMU
#define EM_QEMU "/usr/bin/qemu-aarch64-static"
#endif

extern char **environ;

static int is_aarch64(const char *path)
{
	Elf64_Ehdr h;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, &h, sizeof(h));
	close(fd);
	return n == (ssize_t)sizeof(h) && memcmp(h.e_ident, ELFMAG, SELFMAG) == 0 &&
	       h.e_machine == EM_AARCH64;
}

int execve(const char *path, char *const argv[], char *const envp[])
{
	int (*real)(const char *, char *const[], char *const[]) =
	    (int (*)(const char *, char *const[], char *const[]))dlsym(RTLD_NEXT, "execve");
	if (!real) {
		errno = ENOSYS;
		return -1;
	}
	if (!is_aarch64(path))
		return real(path, argv, envp);
	/* qemu-aarch64-static -0 ARGV0 PATH ARGV[1..] */
	size_t argc = 0;
	while (argv[argc])
		argc++;
	char **qa = calloc(argc + 5, sizeof(*qa));
	if (!qa) {
		errno = ENOMEM;
		return -1;
	}
	size_t k = 0;
	qa[k++] = (char *)EM_QEMU;
	qa[k++] = (char *)"-0";
	qa[k++] = argc ? argv[0] : (char *)path;
	qa[k++] = (char *)path;
	for (size_t i = 1; i < argc; i++)
		qa[k++] = argv[i];
	qa[k] = NULL;
	int rc = real(EM_QEMU, qa, envp);
	int err = errno;
	free(qa);
	errno = err;
	return rc;
}

int execv(const char *path, char *const argv[])
{
	return execve(path, argv, environ);
}

int execl(const char *path, const char *arg, ...)
{
	char *argv[64];
	size_t n = 0;
	va_list ap;
	argv[n++] = (char *)arg;
	va_start(ap, arg);
	while (argv[n - 1] && n < 64)
		argv[n++] = va_arg(ap, char *);
	va_end(ap);
	if (argv[n - 1]) {
		errno = E2BIG;
		return -1;
	}
	return execve(path, argv, environ);
}
