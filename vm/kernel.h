/* The tdrl Jupyter kernel: `tdrl --kernel -f CONNECTION_FILE`.
 *
 * Jupyter messaging protocol 5.3 over ZeroMQ; messages signed with HMAC-SHA256 (OpenSSL);
 * JSON through jansson. Threads: the main thread owns the Lua state and the shell socket (it
 * executes cells); a heartbeat thread echoes; a control thread answers interrupt / shutdown /
 * kernel_info on the control channel while a cell runs; an output thread turns what the
 * process writes to its stdout / stderr (fds 1 and 2 are pipes) into `stream` messages.
 *
 *   kernel.c        entry point, the shell loop, the handlers, the Lua side (display, inspect)
 *   kernel_cell.c   compiling a cell (its last expression's value, the user's line numbers)
 *   kernel_wire.c   connection file, sockets, message decoding / signing / sending, helpers
 *   kernel_io.c     heartbeat, control channel, output capture
 *   kernel_stdin.c  io.read in a cell: input_request / input_reply on the stdin channel
 */
#ifndef TDRL_KERNEL_H
#define TDRL_KERNEL_H

#include <lua.h>

/* Runs the kernel on L (standard libraries opened, package.path set). `args` are the words
 * after "--kernel": "-f FILE" (or "--f=FILE", "-f=FILE", or the file alone). Returns the
 * process exit status. */
int host_kernel(lua_State *L, int argc, char **argv);

/* Built with the kernel when Debian's libzmq3-dev and libssl-dev are installed (the Makefile
 * links libzmq and libcrypto when pkg-config finds them); without them `tdrl --kernel` says
 * which packages are missing. */
#if defined(__has_include)
#if __has_include(<zmq.h>) && __has_include(<openssl/hmac.h>)
#define TDRL_KERNEL_ZMQ 1
#endif
#endif

#if defined(TDRL_KERNEL_INTERNAL)
/* ---- kernel_cell.c: compiling a cell ---- */
/* Pushes the cell's function (LUA_OK; no arguments) or the syntax error (its status), as the
 * user's code reads. */
int kcell_compile(lua_State *L, const char *code, size_t len, const char *chunk);
/* The code as one expression list (the same calling convention), or a message (wrapper's). */
int kcell_load_expression(lua_State *L, const char *code, size_t len, const char *chunk);
/* Does the code end with ';' (its value kept quiet)? */
int kcell_is_quiet(const char *s, size_t n);
#endif

#if defined(TDRL_KERNEL_INTERNAL) && defined(TDRL_KERNEL_ZMQ)
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#define KERNEL_PROTOCOL_VERSION "5.3"

/* One decoded message. Identities are the routing frames before "<IDS|MSG>". */
typedef struct {
    int n_ids;
    char **ids;
    size_t *id_len;
    json_t *header, *parent, *metadata, *content; /* objects (never NULL once decoded) */
    const char *msg_type;                         /* inside header */
    const char *msg_id;
} kmsg;

typedef struct {
    void *ctx;
    void *shell, *control, *stdin_sock, *iopub, *hb;
    char key[512];
    size_t key_len;
    const void *digest; /* EVP_MD * for the signature scheme; NULL when the key is empty */
    char session[40];   /* this kernel's session id */
    pthread_mutex_t iopub_lock;
    int log_fd;         /* the original stderr: the kernel's own log */
} kwire;

extern kwire kw;

/* Connection file -> sockets bound. Returns 0, or -1 with a message logged. */
int kw_open(const char *connection_file);
void kw_close(void);

/* Logs one line to the original stderr ("tdrl kernel: ..."). */
void kw_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Receives one multipart message from `sock` (ZMQ_DONTWAIT when !wait). Returns 1 with *m
 * filled, 0 when nothing was there, -1 when a message was received but is malformed: then
 * *why holds the reason and m->ids (when any) the sender, so that an error can be returned. */
int kw_recv(void *sock, kmsg *m, bool wait, char *why, size_t why_len);
void kw_free(kmsg *m);

/* Sends a message of `type` with `content` (reference stolen) as a reply to `parent` (may be
 * NULL: empty parent header) on `sock`, to the identities of `parent` (or of `to` when given).
 * iopub messages take a topic instead and are serialised under kw.iopub_lock. */
int kw_send(void *sock, const kmsg *parent, const char *type, json_t *content);
int kw_publish(const json_t *parent_header, const char *type, json_t *content);
/* A reply carrying an error (status "error") for a request we could not serve. */
int kw_send_error(void *sock, const kmsg *req, const char *reply_type, const char *ename,
                  const char *evalue);
/* An error answer to a message that could not be decoded (to its identities when known). */
void kw_reply_malformed(void *sock, kmsg *m, const char *why);
/* status busy / idle on iopub with `parent` as parent header */
void kw_status(const json_t *parent_header, const char *state);

/* Helpers. */
void kw_uuid(char out[37]);
void kw_now_iso(char out[40]);
/* A JSON string from bytes that may not be valid UTF-8 (bad bytes become U+FFFD). */
json_t *kw_string(const char *s, size_t n);
/* Length of the longest prefix of s[0..n) that does not end inside a UTF-8 sequence. */
size_t kw_utf8_complete(const char *s, size_t n);
/* base64 of n bytes into a new malloc'd NUL-terminated string. */
char *kw_base64(const unsigned char *s, size_t n);
/* Converts between a position in Unicode code points and a byte offset in UTF-8 text. */
size_t kw_cp_to_byte(const char *s, size_t len, long cp);
long kw_byte_to_cp(const char *s, size_t byte);

/* ---- kernel_io.c ---- */
/* fds 1 and 2 become pipes read by the output thread; stdin reads /dev/null. */
int kio_capture_start(void);
/* Sets the parent header of the stream messages that follow (a new reference is kept). */
void kio_set_parent(const json_t *parent_header);
/* Sends everything written so far (fflush + drain the pipes): call before any other iopub
 * message that must come after the output. */
void kio_flush(void);
int kio_threads_start(pthread_t main_thread);
void kio_threads_stop(void);
/* Set by a shutdown_request on either channel; *restart as asked. */
extern volatile int kio_shutdown_requested, kio_shutdown_restart;
/* Interrupts the cell running on the main thread (as Ctrl-C does). */
void kio_interrupt_main(void);
/* ---- kernel_stdin.c ---- */
/* The execute_request being served (NULL after it) and whether it allowed stdin. */
void kstdin_set_request(const kmsg *m, int allow_stdin);
/* K.input(prompt) and K.stdin_allowed() into the table on the stack top. */
void kstdin_register(lua_State *L);
/* kernel_info_reply content (kernel_info.c): shared by the shell and control handlers. */
json_t *kernel_info_content(void);
#endif

#endif
