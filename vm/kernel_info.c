/* The kernel_info_reply content, which the shell (kernel.c) and control (kernel_io.c) channels
 * both answer with. */
#define TDRL_KERNEL_INTERNAL
#include <stdio.h>
#include <string.h>

#include <lua.h>

#include "host.h"
#include "kernel.h"

#ifdef TDRL_KERNEL_ZMQ
json_t *kernel_info_content(void) {
    char banner[512];
    host_version_string(banner, sizeof banner);
    size_t bl = strlen(banner);
    snprintf(banner + bl, sizeof banner - bl,
             "\nJupyter kernel: T = require 'tdrl' (also nn, optim, data, plot); display(x) shows figures, images "
             "and values; help(x) says how to call x.");
    return json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:s, s:s, s:s, s:s, s:s}, s:s, s:[{s:s, s:s}], s:b}", "status",
                     "ok", "protocol_version", KERNEL_PROTOCOL_VERSION, "implementation", "tdrl",
                     "implementation_version", TDRL_VERSION, "language_info", "name", "lua", "version",
                     LUA_VERSION_MAJOR "." LUA_VERSION_MINOR "." LUA_VERSION_RELEASE, "mimetype", "text/x-lua",
                     "file_extension", ".lua", "pygments_lexer", "lua", "codemirror_mode", "lua", "banner", banner,
                     "help_links", "text", "Lua 5.4 manual", "url", "https://www.lua.org/manual/5.4/", "debugger",
                     0);
}
#endif
