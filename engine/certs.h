/* The node's tunnel certificates (tunnel.encryption "tls"): what the
 * control stream's certificate operations do (store/control.h
 * em_ctl_cert_ops) and the reload of the files on SIGHUP.
 *
 * Managed files (none of tunnel.tls.ca_file, cert_file, key_file set):
 * <data_dir>/tls/node.pem holds this node's certificate and then its key
 * (mode 0600), <data_dir>/tls/ca.crt the cluster CA's certificate (on the
 * cloud, <ca_dir>/ca.crt). The cloud (tunnel.tls.ca_dir) issues its own at
 * start when it is missing or two thirds of its lifetime are over, and
 * signs the edges' requests. An edge with no certificate asks the cloud
 * for one over the cluster key (enrollment) and, once it has one, asks for
 * a new one over its TLS tunnel when two thirds of its lifetime are over
 * (renewal); each new certificate is checked by building a TLS context
 * from it before it replaces the files, and that context goes to the
 * engine. Files set by the operator are neither enrolled nor renewed here:
 * a SIGHUP loads what they hold then (rotation).
 *
 * The control operations run on the sync thread, em_certs_reload on the
 * main thread; a mutex orders them. */
#ifndef EM_ENGINE_CERTS_H
#define EM_ENGINE_CERTS_H

#include "store/config.h"
#include "store/control.h"

struct em_certs;
struct em_engine;

/* For <cfg> (copied; nothing to do without tunnel TLS: returns 0 and
 * NULL). On a cloud with tunnel.tls.ca_dir: loads the CA and, with managed
 * files, issues this node's certificate when it is missing or due for
 * renewal. Returns 0, or -errno with the reason (naming the file) logged:
 * the daemon must not start. Blocking file I/O: call before the engine
 * starts. */
int em_certs_new(const struct em_config *cfg, struct em_certs **out);

/* The engine whose TLS context and revocations follow. */
void em_certs_attach(struct em_certs *c, struct em_engine *eng);

/* Fills <ops> with this node's certificate operations (sign on a cloud
 * with a CA, request and install on an edge with managed files, revoked
 * everywhere). */
void em_certs_ops(struct em_certs *c, struct em_ctl_cert_ops *ops);

/* SIGHUP: loads the certificate files again (a cloud with managed files
 * first renews its own when due) and hands the engine the new context;
 * a file that does not load is logged and the running context stays. */
void em_certs_reload(struct em_certs *c);

/* Main thread, about once a minute: a cloud with managed files renews its
 * own certificate when due (as em_certs_reload). */
void em_certs_tick(struct em_certs *c);

void em_certs_free(struct em_certs *c);

#endif
