-- The diffusion trainer: Adam with linear warm-up, global gradient clipping, an EMA of the
-- weights (used for the evaluation loss), a held-out evaluation every N steps, atomic
-- checkpoints every N steps and on Ctrl-C, exact resume, a progress bar and a metrics log.
--
--   local trainer = require 'tdrl.diffusion.trainer'
--   local model, summary = trainer.run(cfg, {train = X (N,C,H,W), eval = Xe}, {out = "runs/a"})
--
-- A run folder holds config.json, metrics.jsonl and metrics.csv (one row per logged step),
-- checkpoint.safetensors (model, Adam state, EMA, generator state, step, config) and
-- samples/ when cfg.sample_every > 0. Running again with the same folder resumes from the
-- checkpoint; the loss curve after a resume equals the uninterrupted run's at the same
-- thread count, because every random draw (batch indices, t, noise, dropout) comes from one
-- generator whose state is in the checkpoint.
-- Under mpirun every rank trains on its slice of each global batch (tdrl.data_parallel: the
-- gradients summed over ranks, cfg.dist_noise, cfg.sync_bn, cfg.dist_overlap); rank 0 alone
-- writes the run folder, and a checkpoint written by N ranks resumes on any number.
local T = require 'tdrl'
local optim = require 'tdrl.optim'
local checkpoint = require 'tdrl.checkpoint'
local json = require 'tdrl.json'
local progress = require 'tdrl.util.progress'
local fs = require 'tdrl.util.fs'
local D = require 'tdrl.diffusion'
local dist = require 'tdrl.dist'
local DataParallel = require 'tdrl.data_parallel'

local M = {}

local CSV_FIELDS = {"step", "loss", "dsm", "reg", "lr", "grad_norm", "eval_loss", "eval_loss_high_t", "seconds"}

--- mean DSM loss of the model (in eval mode, EMA weights if given) on fixed held-out batches:
--- the same times and noise every call, so successive evaluations are comparable. Second
--- result: the mean score term over the samples with t >= 0.5, where x_t has lost most of x0
--- and a code of x0 helps most.
function M.evaluate(model, X, cfg, ema)
  if ema then ema:store(); ema:copy_to() end
  local was_training = model.training
  model:eval()
  local gen = T.Generator(cfg.seed + 7919)
  local n = math.min(cfg.eval_batches or 4, math.max(1, X:size(1) // cfg.batch))
  local total, hi, n_hi = 0, 0, 0
  T.no_grad(function()
    for i = 1, n do
      local b = math.min(cfg.batch, X:size(1))
      local x0 = X:narrow(1, ((i - 1) * b) % math.max(1, X:size(1) - b + 1) + 1, b)
      local loss, parts = D.loss.dsm(model, x0, {lambda_z = cfg.lambda_z, regulariser = cfg.regulariser, generator = gen})
      total = total + loss:item()
      local mask = parts.t:ge(0.5)
      hi = hi + (parts.per_sample * mask):sum():item()
      n_hi = n_hi + mask:sum():item()
    end
  end)
  model:train(was_training)
  if ema then ema:restore() end
  return total / n, n_hi > 0 and hi / n_hi or nil
end

local function write_csv_row(path, row)
  local new = not fs.exists(path)
  local f = assert(io.open(path, "a"))
  if new then f:write(table.concat(CSV_FIELDS, ","), "\n") end
  local vals = {}
  for i, k in ipairs(CSV_FIELDS) do
    local v = row[k]
    vals[i] = v == nil and "" or (type(v) == "number" and string.format("%.9g", v) or tostring(v))
  end
  f:write(table.concat(vals, ","), "\n")
  f:close()
end

-- On resume the metrics logs may hold rows past the checkpoint (steps run after the last save,
-- before a crash or a kill): they are logged again as the run repeats those steps, so they are
-- dropped first, or metrics.csv holds two rows for each of them.
local function trim_metrics(out, step)
  local function keep(path, step_of)
    if not fs.exists(path) then return end
    local lines = {}
    for line in fs.read(path):gmatch("[^\n]+") do
      local s = step_of(line)
      if s == nil or s <= step then lines[#lines + 1] = line end
    end
    fs.write(path, #lines > 0 and table.concat(lines, "\n") .. "\n" or "")
  end
  keep(out .. "/metrics.csv", function(line) return math.tointeger(tonumber(line:match("^([^,]*)"))) end)
  keep(out .. "/metrics.jsonl", function(line)
    local ok, row = pcall(json.decode, line)
    return ok and type(row) == "table" and math.tointeger(row.step) or nil
  end)
end

--- builds the model, optimiser, schedule and EMA for cfg (all from one seeded generator)
function M.setup(cfg)
  local gen = T.Generator(cfg.seed)
  local model = D.build(cfg, gen)
  local opt = optim.Adam(model:parameters(), {lr = cfg.lr, betas = {cfg.beta1, cfg.beta2}, eps = cfg.adam_eps})
  local sched = cfg.warmup > 0 and optim.LinearWarmup(opt, {warmup = cfg.warmup}) or nil
  local ema = optim.EMA(model, {decay = cfg.ema})
  return {model = model, opt = opt, sched = sched, ema = ema, gen = gen, step = 0}
end

--- run(cfg, data = {train = (N,C,H,W), eval = (M,C,H,W) or nil}, opts = {out = folder,
--- resume = true, quiet = false, on_step = fn(step, row)}) -> model, summary
function M.run(cfg, data, opts)
  opts = opts or {}
  local out = opts.out
  local main = dist.is_main() -- the rank that writes files and prints
  if out and main then fs.mkdir(out) end
  local ckpt_path = out and (out .. "/checkpoint.safetensors")
  local s = M.setup(cfg)
  local model, opt, sched, ema, gen = s.model, s.opt, s.sched, s.ema, s.gen
  local step = 0
  if ckpt_path and opts.resume ~= false and dist.broadcast(fs.exists(ckpt_path)) then
    local ck = checkpoint.load(ckpt_path, {model = model, optimizer = opt, ema = ema, schedule = sched,
      generators = {run = gen}})
    step = ck.step
    if main then trim_metrics(out, step) end
    if not opts.quiet and main then print(string.format("resuming %s from step %d", ckpt_path, step)) end
  end
  if out and main then fs.write(out .. "/config.json", json.encode(cfg, "  ") .. "\n") end
  local dp = DataParallel.new(model, {noise = cfg.dist_noise, sync_bn = cfg.sync_bn, overlap = cfg.dist_overlap,
    bucket_mb = cfg.dist_bucket_mb})
  dp:broadcast_state({ema.shadow})
  local function save()
    if ckpt_path and main then
      checkpoint.save(ckpt_path, {model = model, optimizer = opt, ema = ema, schedule = sched,
        generators = {run = gen}, step = step, config = cfg})
    end
  end
  model:train()
  local X, Xe = data.train, data.eval or data.train
  local bar = progress.new(cfg.iters, {label = opts.label or ("train " .. (cfg.encoder or "")), first = step,
    out = (opts.quiet or not main) and io.open("/dev/null", "w") or io.stdout})
  local t_start = T.clock()
  local last = {}
  local prev_defer = T.defer_interrupts(true)
  local ok, err = xpcall(function()
    while step < cfg.iters do
      if dp:any(T.interrupt_pending()) then error("interrupted", 0) end
      local x0, draws = dp:diffusion_batch(X, cfg.batch, gen, model.sde)
      draws.lambda_z, draws.regulariser = cfg.lambda_z, cfg.regulariser
      opt:zero_grad()
      local loss, parts = D.loss.dsm(model, x0, draws)
      dp:backward(loss)
      local gnorm = cfg.grad_clip > 0 and optim.clip_grad_norm_(model, cfg.grad_clip) or nil
      -- the k-th update (from 0) runs at lr * min(k / warmup, 1), as score_sde's optimize_fn
      -- with state['step'] before its increment: the first update has lr 0
      local lr = sched and sched:get_lr() or cfg.lr
      opt:step()
      if sched then sched:step() end
      ema:update()
      step = step + 1
      local loss_v, dsm_v, reg_v = dp:mean(loss:item(), parts.dsm, parts.reg)
      local row = {step = step, loss = loss_v, dsm = dsm_v, reg = reg_v,
        lr = lr, grad_norm = gnorm, seconds = T.clock() - t_start}
      if main and cfg.eval_every > 0 and (step % cfg.eval_every == 0 or step == cfg.iters) then
        row.eval_loss, row.eval_loss_high_t = M.evaluate(model, Xe, cfg, ema)
        last.eval_loss, last.eval_loss_high_t = row.eval_loss, row.eval_loss_high_t
      end
      if out and main and (step % cfg.log_every == 0 or row.eval_loss or step == cfg.iters) then
        fs.append(out .. "/metrics.jsonl", json.encode(row) .. "\n")
        write_csv_row(out .. "/metrics.csv", row)
      end
      if cfg.ckpt_every > 0 and step % cfg.ckpt_every == 0 then save() end
      if main and cfg.sample_every and cfg.sample_every > 0 and out and step % cfg.sample_every == 0 then
        require('tdrl.diffusion.sampler').grid(model, Xe, cfg, out .. string.format("/samples/step%07d.png", step))
      end
      last.loss = row.loss
      bar:update(step, {loss = row.loss, eval = last.eval_loss})
      if opts.on_step then opts.on_step(step, row) end
    end
  end, debug.traceback)
  T.defer_interrupts(prev_defer)
  if not ok then
    -- a consistent state: the last completed step (Ctrl-C is deferred to step boundaries)
    if tostring(err):find("interrupted", 1, true) then
      save()
      if not opts.quiet and main then print(string.format("\ninterrupted at step %d: checkpoint saved to %s", step, tostring(ckpt_path))) end
      error("interrupted", 0) -- the user's stop, not a fault: no traceback
    end
    error(err, 0)
  end
  save()
  local secs = bar:finish({loss = last.loss, eval = last.eval_loss})
  return model, {steps = step, loss = last.loss, eval_loss = last.eval_loss, eval_loss_high_t = last.eval_loss_high_t,
    seconds = secs, ema = ema}
end

return M
