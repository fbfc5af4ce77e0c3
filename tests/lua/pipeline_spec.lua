-- The pipeline's modes: each is exactly what its table says, and options override single keys.
local P = require 'tdrl.paper'

local function same(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= "table" then return a == b end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

describe("pipeline modes", function()
  it("every mode defines the same keys", function()
    local keys = {}
    for k in pairs(P.modes.default) do keys[#keys + 1] = k end
    for name, m in pairs(P.modes) do
      for _, k in ipairs(keys) do spec.truthy(m[k] ~= nil, string.format("mode %s lacks %s", name, k)) end
      for k in pairs(m) do spec.truthy(P.modes.default[k] ~= nil, string.format("mode %s has extra key %s", name, k)) end
    end
  end)
  it("a mode is exactly its table: no key falls through from another mode", function()
    for _, argv in ipairs({{"--quick"}, {}, {"--mode=standard"}, {"--full"}, {"--mode=full"}}) do
      local cfg = P.config(argv)
      for k, v in pairs(P.modes[cfg.mode]) do
        spec.truthy(same(cfg[k], v), string.format("%s: %s is %s, the mode says %s", table.concat(argv, " "), k,
          tostring(cfg[k]), tostring(v)))
      end
    end
    local full = P.config({"--full"})
    spec.eq(full.mode, "full")
    spec.eq(full.head_epochs_seq, 1500)
    spec.eq(full.diffusion_warmup, 5000)
    spec.eq(full.mine_iters, 0)
    spec.eq(full.mine_measure, "reference")
  end)
  it("options override single keys and unknown ones are refused", function()
    local cfg = P.config({"--mode=standard", "--head_epochs=50", "--dataset=cmnist"})
    spec.eq(cfg.head_epochs, 50)
    spec.eq(cfg.dataset, "cmnist")
    spec.eq(cfg.head_epochs_seq, P.modes.standard.head_epochs_seq)
    spec.raises(function() P.config({"--head_epoch=5"}) end, "head_epoch")
    spec.raises(function() P.config({"--mode=fast"}) end, "unknown mode", "fast")
  end)
  it("diffusion_<k> keys set the preset's fields", function()
    local d = P.diffusion_config(P.config({"--mode=standard", "--diffusion_enc_coords=true", "--diffusion_iters=123"}))
    spec.eq(d.iters, 123)
    spec.eq(d.enc_coords, true)
    spec.eq(d.enc_depth, P.modes.standard.diffusion_enc_depth)
  end)
end)

describe("paper results", function()
  it("write_result writes the value as JSON and the rows as CSV", function()
    local fs = require 'tdrl.util.fs'
    local dir = os.tmpname()
    os.remove(dir)
    fs.mkdir(dir)
    local rows = {{task = "shape", acc = 0.5, n = 3, times = {0.25, 1}}, {task = 'a,"b"', n = 4}}
    local v = P.write_result(dir, "r", {rows = rows, note = "x"}, rows, {"task", "acc", "n", "times"})
    spec.eq(v.note, "x", "returns the value")
    local back = require('tdrl.json').decode(fs.read(dir .. "/r.json"))
    spec.eq(back.rows[1].task, "shape")
    spec.eq(back.rows[2].n, 4)
    spec.eq(fs.read(dir .. "/r.csv"), 'task,acc,n,times\nshape,0.5,3,0.25 1\n"a,""b""",,4,\n')
    P.write_result(dir, "only", {1, 2})
    spec.truthy(fs.exists(dir .. "/only.json") and not fs.exists(dir .. "/only.csv"), "no rows: JSON only")
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)
