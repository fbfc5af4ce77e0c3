-- The diffusion model at a tiny size: shapes, the whole model's gradient against central
-- differences, a loss that falls in a short training, and exact resume from a checkpoint.
local T = require 'tdrl'
local D = require 'tdrl.diffusion'
local trainer = require 'tdrl.diffusion.trainer'
local gc = require 'tdrl.gradcheck'

local function micro(over)
  local cfg = D.presets.resolve({preset = "tiny", image_size = 8, nf = 4, ch_mult = {1, 2}, enc_depth = 10,
    enc_widen = 1, latent = 3, batch = 6, iters = 6, warmup = 2, eval_every = 3, ckpt_every = 3, log_every = 1,
    eval_batches = 1, lr = 2e-3})
  for k, v in pairs(over or {}) do cfg[k] = v end
  return cfg
end

local function images(n, seed)
  -- smooth random images in [0, 1]: a blob whose position varies, so that there is structure
  local g = T.Generator(seed)
  local X = T.zeros(n, 3, 8, 8)
  for i = 1, n do
    local cx, cy = math.floor(T.rand(1, g)[1] * 6) + 1, math.floor(T.rand(1, g)[1] * 6) + 1
    X[{i, {}, {cy, cy + 2}, {cx, cx + 2}}] = 1
  end
  return X
end

describe("diffusion model", function()
  it("VE SDE: sigma(0) = sigma_min, sigma(1) = sigma_max, g(t) as the reference", function()
    local sde = D.SDE.new({})
    spec.near(sde:sigma(T.tensor({0}))[1], 0.01, 1e-5)
    spec.near(sde:sigma(T.tensor({1}))[1], 50, 1e-5)
    spec.near(sde:g(0.5), 0.01 * 5000 ^ 0.5 * math.sqrt(2 * math.log(5000)), 1e-5)
    local t = sde:sample_t(1000, T.Generator(1))
    spec.truthy(t:min():item() >= 1e-5 and t:max():item() <= 1)
  end)

  it("score and code shapes for latent 2, VDRL and DRL and the baseline", function()
    for _, enc in ipairs({"vdrl", "drl", "none"}) do
      local cfg = micro({encoder = enc, latent = 2})
      local m = D.build(cfg, T.Generator(0))
      local x = T.rand(5, 3, 8, 8)
      local out = m(x, T.rand(5), {x0 = x})
      spec.eq(table.concat(out.output:size(), "x"), "5x3x8x8")
      if enc ~= "none" then spec.eq(table.concat(out.z:size(), "x"), "5x2") end
      if enc == "vdrl" then spec.eq(out.logvar:size(2), 2) end
    end
  end)

  it("coordinate channels: the encoder's first conv reads C + 2 planes, whatever the batch", function()
    local m = D.build(micro({enc_coords = true}), T.Generator(0))
    spec.eq(m.encoder.conv1.weight:size(2), 5)
    spec.eq(D.build(micro(), T.Generator(0)).encoder.conv1.weight:size(2), 3)
    m.encoder:eval()
    for _, B in ipairs({3, 2, 3}) do
      local e = m.encoder(images(B, 1), T.full({B}, 0.5))
      spec.eq(table.concat(e.z:size(), "x"), B .. "x3")
    end
    -- an object moved by four pixels gives another code
    local x = T.zeros(1, 3, 8, 8)
    x:narrow(3, 1, 2):narrow(4, 1, 2):fill_(1)
    local y = T.zeros(1, 3, 8, 8)
    y:narrow(3, 5, 2):narrow(4, 5, 2):fill_(1)
    local zx, zy = m.encoder(x, T.full({1}, 0.5)).z, m.encoder(y, T.full({1}, 0.5)).z
    spec.truthy((zx - zy):abs():max():item() > 1e-4, "a moved object moves the code")
  end)

  it("an untrained score net outputs ~0, so the DSM loss starts at 0.5 * pixels", function()
    local cfg = micro()
    local m = D.build(cfg, T.Generator(0))
    local loss = D.loss.dsm(m, images(64, 3), {generator = T.Generator(2)})
    spec.near(loss:item(), 0.5 * 3 * 8 * 8, 0.15)
  end)

  -- the zero-initialised output convolutions make a fresh model's output 0 whatever its code:
  -- give them small random weights so that the code reaches the loss
  local function wake(m)
    T.no_grad(function()
      for name, p in m:named_parameters() do
        if name:match("conv1%.weight$") or name:match("conv_out%.weight$") then
          p:copy_(T.randn(p:size(), T.Generator(3)) * 0.1)
        end
      end
    end)
  end

  it("code_x0 shows the encoder other images: its own images change nothing, others change the loss", function()
    local m = D.build(micro({encoder = "drl", dropout = 0}), T.Generator(0))
    m:eval()
    wake(m)
    local x0, other = images(8, 3), images(8, 4)
    local function per(code)
      local _, parts = D.loss.dsm(m, x0, {generator = T.Generator(5), code_x0 = code})
      return parts.per_sample
    end
    local base = per(nil)
    spec.eq((per(x0) - base):abs():max():item(), 0, "the same images give the same loss, bit for bit")
    spec.truthy((per(other) - base):abs():max():item() > 1e-6, "another image's code changes the loss")
  end)

  it("whole score + encoder model: gradients of a few parameters equal central differences", function()
    local cfg = micro({encoder = "drl", dropout = 0})
    local m = D.build(cfg, T.Generator(0))
    m:eval()
    local x0 = images(4, 5)
    local params = {}
    for name, p in m:named_parameters() do
      if name == "encoder.head.bias" or name == "up.conv_out.bias" or name == "temb.fc1.bias"
        or name == "encoder.blocks.2.dense.bias" or name == "latent_to_temb.bias" then
        params[#params + 1] = p
      end
    end
    spec.eq(#params, 5, "parameters found")
    local function f()
      return (D.loss.dsm(m, x0, {generator = T.Generator(9), lambda_z = 1e-2}))
    end
    local err, where = gc.check(f, params, {eps = 1e-2})
    print(string.format("#   whole-model gradient check: max error %.2e", err))
    spec.truthy(err < 5e-2, string.format("error %.3g at %s", err, where))
  end)

  it("scale-shift conditioning: gradients equal central differences; an unknown cond is refused", function()
    local cfg = micro({encoder = "drl", dropout = 0, cond = "scale_shift"})
    local m = D.build(cfg, T.Generator(0))
    m:eval()
    local x0 = images(4, 5)
    local params = {}
    for name, p in m:named_parameters() do
      if name == "encoder.head.bias" or name == "latent_to_temb.bias" or name:match("^down.*dense%.bias$") then
        params[#params + 1] = p
      end
    end
    spec.truthy(#params >= 3, "parameters found")
    wake(m)
    local err, where = gc.check(function() return (D.loss.dsm(m, x0, {generator = T.Generator(9), lambda_z = 1e-2})) end,
      params, {eps = 1e-2})
    print(string.format("#   scale-shift gradient check: max error %.2e", err))
    spec.truthy(err < 5e-2, string.format("error %.3g at %s", err, where))
    spec.raises(function() D.build(micro({cond = "film"}), T.Generator(0)) end, "cond must be 'bias' or 'scale_shift'")
  end)

  it("the loss falls over a short training", function()
    local cfg = micro({iters = 40, eval_every = 0, ckpt_every = 0, batch = 16})
    local losses = {}
    trainer.run(cfg, {train = images(200, 1)}, {quiet = true, on_step = function(s, row) losses[s] = row.loss end})
    local first, last = 0, 0
    for i = 1, 5 do first = first + losses[i] / 5; last = last + losses[35 + i] / 5 end
    print(string.format("#   mean loss, steps 1-5: %.2f, steps 36-40: %.2f", first, last))
    spec.truthy(last < 0.8 * first, string.format("loss went from %.2f to %.2f", first, last))
  end)

  it("warm-up as the reference (score_sde): update k runs at lr * min(k / warmup, 1), the first at 0", function()
    local cfg = micro({iters = 4, warmup = 2, eval_every = 0, ckpt_every = 0})
    local lrs = {}
    local model = trainer.run(cfg, {train = images(20, 1)}, {quiet = true, on_step = function(s, row)
      lrs[s] = row.lr
    end})
    spec.eq(lrs[1], 0, "update 1")
    spec.near(lrs[2], cfg.lr / 2, 1e-12, "update 2")
    spec.eq(lrs[3], cfg.lr, "update 3")
    spec.eq(lrs[4], cfg.lr, "update 4")
    -- the first update leaves the weights as they were built
    local fresh = D.build(cfg, T.Generator(cfg.seed))
    local after1 = trainer.run(micro({iters = 1, warmup = 2, eval_every = 0, ckpt_every = 0}),
      {train = images(20, 1)}, {quiet = true})
    local a, b = fresh:parameters(), after1:parameters()
    local d = 0
    for i = 1, #a do d = math.max(d, (a[i] - b[i]):abs():max():item()) end
    spec.eq(d, 0, "weights after the first update")
    spec.truthy(model ~= nil)
  end)

  it("resumes exactly: the loss curve after a resume equals the uninterrupted run's", function()
    local X = images(100, 2)
    local dir = os.tmpname(); os.remove(dir)
    local full, resumed = {}, {}
    trainer.run(micro(), {train = X}, {quiet = true, on_step = function(s, r) full[s] = r.loss end})
    trainer.run(micro({iters = 3}), {train = X}, {out = dir, quiet = true,
      on_step = function(s, r) resumed[s] = r.loss end})
    trainer.run(micro(), {train = X}, {out = dir, quiet = true, on_step = function(s, r) resumed[s] = r.loss end})
    for s = 1, 6 do spec.eq(resumed[s], full[s], "loss at step " .. s) end
    local f = io.open(dir .. "/metrics.csv"); spec.truthy(f, "metrics.csv written"); f:close()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("a resume after a crash past the last checkpoint logs each step once", function()
    local X = images(60, 3)
    local dir = os.tmpname(); os.remove(dir)
    -- checkpoint at step 3, a fault at step 5 (rows 4 and 5 logged, not saved), then a resume to 6
    local ok = pcall(trainer.run, micro(), {train = X}, {out = dir, quiet = true,
      on_step = function(s) if s == 5 then error("fault") end end})
    spec.eq(ok, false)
    trainer.run(micro(), {train = X}, {out = dir, quiet = true})
    local steps = {}
    for line in io.lines(dir .. "/metrics.csv") do steps[#steps + 1] = line:match("^([^,]*)") end
    spec.eq(table.concat(steps, " "), "step 1 2 3 4 5 6")
    local n = 0
    for _ in io.lines(dir .. "/metrics.jsonl") do n = n + 1 end
    spec.eq(n, 6, "metrics.jsonl rows")
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("SIGTERM stops a training run at a step boundary with a checkpoint saved", function()
    local dir = os.tmpname(); os.remove(dir)
    os.execute("mkdir -p '" .. dir .. "'")
    local script = dir .. "/train.lua"
    local f = assert(io.open(script, "w"))
    -- the run announces its first step through a FIFO (or that it failed before it), then trains
    -- for ever until the signal
    f:write(string.format([[
      package.path = %q
      local T = require 'tdrl'
      local D = require 'tdrl.diffusion'
      local trainer = require 'tdrl.diffusion.trainer'
      local cfg = D.presets.resolve({preset = "tiny", image_size = 8, nf = 4, ch_mult = {1, 2}, enc_depth = 10,
        enc_widen = 1, latent = 3, batch = 4, iters = 1000000, warmup = 0, eval_every = 0, ckpt_every = 0,
        log_every = 1})
      local said = false -- the FIFO has one reader: write to it once
      local function say(w) said = true; local r = io.open(%q, "w"); r:write(w, "\n"); r:close() end
      local ok, err = pcall(trainer.run, cfg, {train = T.rand(8, 3, 8, 8)}, {out = %q, quiet = true,
        on_step = function(s) if s == 1 then say("step") end end})
      if not ok then
        if not said then say("failed") end
        error(err, 0)
      end
    ]], package.path, dir .. "/ready", dir .. "/run"))
    f:close()
    local exe = arg[-1] or "./tdrl"
    -- the shell blocks reading the FIFO until the run writes to it: an explicit signal, no clock
    local cmd = string.format("mkfifo '%s/ready' && { %s '%s' >/dev/null 2>&1 & pid=$!; " ..
      "read said < '%s/ready'; echo said=$said; kill -TERM $pid; wait $pid; echo status=$?; }", dir, exe, script, dir)
    local out = io.popen(cmd):read("a")
    spec.truthy(out:find("said=step", 1, true), "the run reached its first step: " .. out)
    spec.truthy(out:find("status=143", 1, true), "exit status: " .. out)
    local ck = require('tdrl.checkpoint').load(dir .. "/run/checkpoint.safetensors")
    spec.truthy(ck.step >= 1, "checkpoint step " .. tostring(ck.step))
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("samplers give finite images; conditional sampling uses the given codes", function()
    local S = require 'tdrl.diffusion.sampler'
    local cfg = micro({encoder = "drl", latent = 2})
    local m = D.build(cfg, T.Generator(0))
    -- an untrained score is ~0, which makes the Langevin step size explode: give it some output
    T.no_grad(function() m.up.conv_out.weight:normal_(0, 0.05, T.Generator(3)) end)
    local imgs = images(3, 4)
    local z = S.codes(m, imgs, 0.5)
    spec.eq(table.concat(z:size(), "x"), "3x2")
    for _, method in ipairs({"pc", "em"}) do
      local x = S.sample(m, {z = z, steps = 5, method = method, generator = T.Generator(1)})
      spec.eq(table.concat(x:size(), "x"), "3x3x8x8")
      spec.truthy(x:abs():max():item() < 1e6, method .. " sample is finite")
    end
    -- different codes give different samples from the same noise
    local a = S.sample(m, {z = z, steps = 3, generator = T.Generator(1)})
    local b = S.sample(m, {z = z * 0 + 5, steps = 3, generator = T.Generator(1)})
    spec.truthy(spec.maxdiff(a, b) > 0, "the code changes the sample")
    spec.raises(function() S.sample(m, {steps = 2}) end, "encoder")
  end)
end)

