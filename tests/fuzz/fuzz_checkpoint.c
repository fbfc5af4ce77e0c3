/* libFuzzer target: checkpoint.load on arbitrary bytes, read only and restored into a small
 * model, optimiser, schedule and generator (lua/tdrl/checkpoint.lua over the safetensors
 * reader); never a crash, a leak, or an error that names no file. */
#include "fuzz_lua.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_lua_init("local T = require 'tdrl'\n"
                  "local nn, optim = require 'tdrl.nn', require 'tdrl.optim'\n"
                  "local checkpoint = require 'tdrl.checkpoint'\n"
                  "local m = nn.Sequential(nn.Linear(2, 3), nn.SiLU(), nn.Linear(3, 1))\n"
                  "local opt = optim.Adam(m:parameters(), {lr = 1e-3})\n"
                  "local targets = {model = m, optimizer = opt, schedule = optim.LinearWarmup(opt, {warmup = 2}),\n"
                  "  ema = optim.EMA(m, {decay = 0.9}), generators = {run = T.Generator(1)}}\n"
                  "function fuzz_one(path)\n"
                  "  local ok, err = pcall(checkpoint.load, path)\n"
                  "  if not ok then return tostring(err) end\n"
                  "  ok, err = pcall(checkpoint.load, path, targets)\n"
                  "  if not ok then return tostring(err) end\n"
                  "  T.randn(4, targets.generators.run)\n"
                  "  return nil\n"
                  "end\n");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_lua_run("checkpoint.safetensors", data, size);
    return 0;
}
