/* libFuzzer target: traj.load on arbitrary bytes (lua/tdrl/traj.lua over the safetensors
 * reader), then a selection of time points from what loaded; never a crash, a leak, or an
 * error that names no file. */
#include "fuzz_lua.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_lua_init("local traj = require 'tdrl.traj'\n"
                  "function fuzz_one(path)\n"
                  "  local ok, tr = pcall(traj.load, path)\n"
                  "  if not ok then return tostring(tr) end\n"
                  "  local ok2, err = pcall(traj.select_points, tr, {1})\n"
                  "  if not ok2 then return tostring(err) end\n"
                  "  return nil\n"
                  "end\n");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_lua_run("traj.safetensors", data, size);
    return 0;
}
