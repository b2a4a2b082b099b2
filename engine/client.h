/* Internal to engine/: accepted client connections.
 *
 * A client accepted on the capture port or an explicit listener learns its
 * original destination (capture), then waits for its first bytes (the sniff
 * mode, at most timeouts.sniff_ms): HTTP/1.x goes to the HTTP mode
 * (engine/http.h), anything else, or silence, to the L4 relay
 * (engine/relay.h). */
#ifndef EM_ENGINE_CLIENT_H
#define EM_ENGINE_CLIENT_H

#include "engine/sock.h"

/* The accept callback of client listeners (em_listener.accept): takes
 * <fd>, which is closed when no socket can be had for it. */
void em_client_accept(struct em_worker *w, struct em_listener *l, int fd);

#endif
