-- The main job end to end: `examples/reproduce.lua --quick` runs every stage and each stage
-- leaves its outputs; a second run skips the finished stages.
local T = require 'tdrl'
local fs = require 'tdrl.util.fs'

local dir = os.tmpname()
os.remove(dir)
local exe = arg[-1] or "./tdrl"

describe("reproduce --quick", function()
  it("runs every stage and writes the report", function()
    local cmd = string.format("%s examples/reproduce.lua --quick --out=%s 2>&1", exe, dir)
    local p = io.popen(cmd)
    local out = p:read("a")
    local ok = p:close()
    if not ok then error("reproduce failed:\n" .. out:sub(-3000)) end
    -- (the trajectories, step 3, are no stage: their files are the record that they are done)
    for _, stage in ipairs({"1-train-vdrl", "2-train-drl-latent2", "4-heads", "5-nmi", "6-attention",
      "7-granularity", "8-granularity-vdrl", "9-learned-times"}) do
      spec.truthy(fs.exists(dir .. "/" .. stage .. ".done"), "stage " .. stage .. " finished")
    end
    for _, f in ipairs({"model-vdrl/checkpoint.safetensors", "model-vdrl/metrics.csv", "model-drl-latent2/config.json",
      "traj-vdrl-g10-train.safetensors", "traj-vdrl-g10-test.safetensors", "heads-vdrl.csv", "heads-vdrl.json",
      "figure1-vdrl-shape.png", "nmi-vdrl.png", "nmi-vdrl.json", "attention-vdrl.png", "jsd-vdrl.png",
      "granularity-drl-latent2.png", "learned-times-vdrl.csv", "learned-times-vdrl.png", "report.html",
      "summary.md"}) do
      spec.truthy(fs.exists(dir .. "/" .. f), f .. " written")
    end
    local html = fs.read(dir .. "/report.html")
    spec.truthy(html:find("data:image/png;base64,", 1, true), "figures embedded in the report")
    spec.truthy(html:find("best single point", 1, true), "the heads finding is stated")
    spec.truthy(html:find("Learned query times", 1, true), "the learned times section")
    for _, c in ipairs({"C1", "C2", "C3", "C4", "C5"}) do
      spec.truthy(html:find(c .. "</td>", 1, true), "finding " .. c .. " in the findings table")
    end
    local md = fs.read(dir .. "/summary.md")
    spec.truthy(md:find("holds", 1, true) or md:find("inconclusive", 1, true), "verdicts in summary.md")
    local heads = fs.read(dir .. "/heads-vdrl.csv")
    local rows = 0
    for _ in heads:gmatch("\n") do rows = rows + 1 end
    spec.eq(rows, 1 + 13 * 4, "header + (11 points + GRU + Transformer) x 4 tasks")
    spec.truthy(out:find("report:", 1, true), "prints where the report is")
    -- every trajectory file says which checkpoint, step and config it came from (README)
    local traj = require 'tdrl.traj'
    for _, f in ipairs({"traj-vdrl-g10-test.safetensors", "traj-drl-latent2-g2-train.safetensors"}) do
      local pv = traj.load(dir .. "/" .. f).provenance
      spec.truthy(type(pv.checkpoint) == "string" and pv.checkpoint:find("checkpoint.safetensors", 1, true),
        f .. ": checkpoint")
      spec.eq(pv.step, 40, f .. ": step")
      spec.truthy(type(pv.config) == "table" and pv.config.iters == 40 and pv.config.encoder ~= nil, f .. ": config")
    end
    -- the control's trajectories come from the model as initialised
    local pv = traj.load(dir .. "/traj-vdrl-untrained-g10-test.safetensors").provenance
    spec.eq(pv.step, 0, "untrained: step")
    spec.truthy(type(pv.config) == "table" and pv.config.encoder == "vdrl", "untrained: config")
    local summary = fs.read(dir .. "/summary.md")
    spec.truthy(summary:find("C0", 1, true) and summary:find("D0", 1, true), "the report states C0 and D0")
  end)
  it("a second run skips the finished stages", function()
    local p = io.popen(string.format("%s examples/reproduce.lua --quick --out=%s 2>&1", exe, dir))
    local out = p:read("a")
    spec.truthy(p:close(), out:sub(-2000))
    local skipped = 0
    for _ in out:gmatch("done earlier") do skipped = skipped + 1 end
    spec.eq(skipped, 9, "stages skipped (with 4b, the untrained control)")
    spec.truthy(not out:find("codes vdrl", 1, true), "no trajectory extracted again")
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)

describe("encoder_gain", function()
  it("compares two trained runs bin by bin on the same images, times and noise", function()
    local d = os.tmpname()
    os.remove(d)
    for _, enc in ipairs({"drl", "none"}) do
      local cmd = string.format("%s examples/train_diffusion.lua --encoder=%s --iters=2 --batch=8 --eval_every=0 " ..
        "--samples=false --out=%s/%s 2>&1", exe, enc, d, enc)
      local p = io.popen(cmd)
      local out = p:read("a")
      spec.truthy(p:close(), out:sub(-2000))
    end
    local p = io.popen(string.format("%s examples/encoder_gain.lua --runs=%s/drl,%s/none --n=16 --bins=2 --batch=8 2>&1",
      exe, d, d))
    local out = p:read("a")
    spec.truthy(p:close(), out:sub(-2000))
    local r = require('tdrl.json').decode(fs.read(d .. "/drl/encoder-gain.json"))
    spec.eq(#r.bins, 2)
    spec.eq(r.images, 16)
    for _, b in ipairs(r.bins) do
      spec.eq(#b.loss, 2)
      spec.truthy(b.loss[1] > 0 and b.loss[2] > 0 and b.loss[1] ~= b.loss[2], "two different positive losses")
      spec.near(b.relative, b.loss[1] / b.loss[2] - 1, 1e-9)
    end
    spec.truthy(fs.exists(d .. "/drl/encoder-gain.png"))
    spec.truthy(out:find("0.0-0.5", 1, true) and out:find("%", 1, true), out)
    -- --swap: a run without an encoder is deaf to any code (every increase exactly 0); a DRL run
    -- trained 20 steps (no warm-up, EMA = raw weights: the 2-step one still outputs ~0) hears
    -- another background's code
    p = io.popen(string.format("%s examples/train_diffusion.lua --encoder=drl --iters=20 --batch=8 --warmup=1 " ..
      "--ema=0 --eval_every=0 --samples=false --out=%s/drl20 2>&1", exe, d))
    out = p:read("a")
    spec.truthy(p:close(), out:sub(-2000))
    for _, run in ipairs({"none", "drl20"}) do
      p = io.popen(string.format("%s examples/encoder_gain.lua --runs=%s/%s --n=40 --bins=2 --batch=8 " ..
        "--swap=background,shape --out=%s/swap-%s 2>&1", exe, d, run, d, run))
      out = p:read("a")
      spec.truthy(p:close(), out:sub(-2000))
      r = require('tdrl.json').decode(fs.read(d .. "/swap-" .. run .. "/encoder-gain.json"))
      for _, b in ipairs(r.bins) do
        for _, task in ipairs({"same", "background", "shape"}) do
          spec.truthy(type(b.swap[task]) == "number", run .. ": swap " .. task .. " measured")
          if run == "none" then spec.eq(b.swap[task], 0, "no encoder: swap " .. task) end
        end
        if run == "drl20" then spec.truthy(math.abs(b.swap.background) > 1e-3, "drl: another background's code") end
      end
      spec.truthy(out:find("loss increase", 1, true), out)
    end
    os.execute("rm -rf '" .. d .. "'")
  end)
end)
