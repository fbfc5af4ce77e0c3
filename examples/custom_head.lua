-- Writing your own head and running it through the paper's protocol.
--
--   ./tdrl examples/custom_head.lua --quick
--   ./tdrl examples/custom_head.lua --traj=runs/downstream-synthetic   # reuse saved trajectories
--
-- A head is an nn.Module whose forward(x, times) maps trajectories x (B, P, latent) and their
-- time points (P) to logits (B, classes); its constructor is Class(latent, classes, opts)
-- (opts.generator seeds its initialisation). Register it under a name and the protocol trains
-- it like the built-in MLP, GRU and Transformer heads.
--
-- The head below is not in the paper: a "time-gated pooling" head. Each point's code is
-- concatenated with Fourier features of its t, a small network scores each point, and the
-- softmax of the scores pools the codes. Its pooling weights say which times it relies on, like
-- the Transformer's attention profile, with a fraction of the parameters.
local T = require 'tdrl'
local nn = require 'tdrl.nn'
local heads = require 'tdrl.heads'
local protocol = require 'tdrl.heads.protocol'
local traj = require 'tdrl.traj'
local P = require 'tdrl.paper'
local fs = require 'tdrl.util.fs'

local GatedPool = nn.class('TimeGatedPoolHead', nn.Module)

function GatedPool:__init(latent, classes, opts)
  nn.Module.__init(self)
  local g = {generator = opts and opts.generator}
  self.freqs = 4
  self.score = nn.Sequential(nn.Linear(latent + 2 * self.freqs, 64, g), nn.Tanh(), nn.Linear(64, 1, g))
  self.out = nn.Sequential(nn.Linear(latent, 128, g), nn.ReLU(), nn.Dropout(0.25, g), nn.Linear(128, classes, g))
end

-- Fourier features of the time points: (P) -> (P, 2 * freqs)
function GatedPool:time_features(times)
  local k = T.arange(1, self.freqs + 1):view(1, -1) * math.pi
  local a = times:view(-1, 1) * k
  return T.cat({a:sin(), a:cos()}, 2)
end

function GatedPool:forward(x, times)
  local B, P = x:size(1), x:size(2)
  local tf = self:time_features(times):view(1, P, -1):expand(B, P, 2 * self.freqs)
  local w = self.score(T.cat({x, tf}, 3)):view(B, P):softmax(2) -- (B, P) pooling weights
  self.last_weights = w:detach()
  local pooled = (x * w:view(B, P, 1)):sum(2)                      -- (B, latent)
  return self.out(pooled)
end

heads.register("gated_pool", GatedPool)

local cfg = P.config(arg, {traj = "", encoder = "vdrl", latent = 16})
local dir = P.run_dir(cfg.traj ~= "" and cfg.traj or (cfg.out ~= "" and cfg.out or "runs/custom-head-" .. cfg.dataset))
local name = cfg.encoder
local tr
if fs.exists(string.format("%s/traj-%s-g%d-test.safetensors", dir, name, cfg.granularity)) then
  tr = {}
  for _, split in ipairs({"train", "val", "test"}) do
    tr[split] = traj.load(string.format("%s/traj-%s-g%d-%s.safetensors", dir, name, cfg.granularity, split))
  end
else
  local sets = P.sets(cfg)
  local model = P.model(cfg, dir, name, {encoder = cfg.encoder, latent = cfg.latent}, sets)
  tr = P.trajectories(model, sets, cfg.granularity, dir, name)
end

print(string.format("%-12s %12s %12s", "task", "gated_pool", "gru"))
for _, kind in ipairs({"gated_pool", "gru"}) do
  local res = protocol.run(tr, {head = kind, epochs = cfg.head_epochs_seq, lrs = cfg.head_lrs, seeds = cfg.head_seeds_seq,
    batch = 256})
  cfg["result_" .. kind] = res
end
for _, task in ipairs(tr.train.tasks) do
  print(string.format("%-12s %12.3f %12.3f", task, cfg.result_gated_pool.tasks[task].test_median,
    cfg.result_gru.tasks[task].test_median))
end
local h = heads.new("gated_pool", tr.train.codes:size(3), 2)
print(string.format("\nparameters: gated_pool %d, gru %d", h:num_parameters(),
  heads.new("gru", tr.train.codes:size(3), 2):num_parameters()))
