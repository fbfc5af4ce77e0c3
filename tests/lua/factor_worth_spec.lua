-- examples/factor_worth.lua: oracle-coded score networks, the worth of a factor by noise level.
local fs = require 'tdrl.util.fs'
local json = require 'tdrl.json'

local exe = arg[-1] or "./tdrl"
local dir = os.tmpname()
os.remove(dir)

local function run(args)
  local p = io.popen(string.format("%s examples/factor_worth.lua %s 2>&1", exe, args))
  local out = p:read("a")
  return p:close(), out
end

local ARGS = "--iters=80 --eval_every=40 --batch=16 --variants=all,none --n_eval=100 --bins=2 --out=" .. dir

describe("factor worth", function()
  it("a code of every factor lowers the held-out DSM loss against a zero code", function()
    local ok, out = run(ARGS)
    spec.truthy(ok, out:sub(-2000))
    local r = json.decode(fs.read(dir .. "/factor_worth.json"))
    local worth = {}
    for _, row in ipairs(r.rows) do
      if row.variant == "none" then worth[row.bin] = row.worth end
    end
    -- told nothing, the network must guess background and foreground colours it could be told
    spec.truthy(worth[1] > 0 and worth[2] > 0, out:sub(-600))
    spec.eq(#r.evals.all, 2, "an evaluation every 40 steps")
    -- paired on the one network: told another image's background, it denoises worse
    local swap = {}
    for _, row in ipairs(r.rows) do
      if row.variant == "swap-background" then swap[row.bin] = row.worth end
    end
    spec.truthy(swap[1] > 0 and swap[2] > 0, "swap-background " .. tostring(swap[1]) .. ", " .. tostring(swap[2]))
    spec.truthy(fs.exists(dir .. "/all/ablation.json"), "the ablation is kept for a rerun")
    spec.truthy(fs.exists(dir .. "/factor_worth.png"), "the figure")
  end)
  it("a second run resumes from the finished checkpoints", function()
    local ok, out = run(ARGS)
    spec.truthy(ok, out:sub(-2000))
    spec.truthy(not out:find("factor worth all 1/", 1, true), "no training again")
    spec.truthy(out:find("none", 1, true), out:sub(-600))
  end)
  it("names an unknown variant and the tasks it could take", function()
    local ok, out = run("--variants=-colour --out=" .. dir)
    spec.truthy(not ok, "the run must fail")
    spec.truthy(out:find('unknown variant "-colour"', 1, true) and out:find("shape", 1, true), out:sub(-600))
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)
