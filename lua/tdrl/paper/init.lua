-- tdrl.paper: the paper's pipeline, one table over the modules that make it up, which flow one
-- way (each requires only those before it):
--   config    modes and command-line settings
--   data      the data sets by name (data -> ...)
--   run       run folders, resumable stages, results as JSON + CSV
--   stages    model -> trajectories -> heads / MINE / attention / granularity, with their figures
--   findings  the five findings tested on a run's results (verdict: the rule they are judged by)
-- examples/reproduce.lua composes them; the report itself is tdrl.report.
local P = {}
for _, m in ipairs({"config", "data", "run", "stages"}) do
  for k, v in pairs(require("tdrl.paper." .. m)) do
    assert(P[k] == nil, "tdrl.paper: two modules define " .. k)
    P[k] = v
  end
end
P.findings = require 'tdrl.paper.findings'
P.verdict = require 'tdrl.paper.verdict'
return P
