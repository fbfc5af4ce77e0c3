-- A run folder: stages that a rerun after Ctrl-C skips, and results written as JSON + CSV.
--   local R = require 'tdrl.paper.run'
--   local dir = R.run_dir("runs/synthetic")
--   local r = R.stage(dir, "4-heads", function() return {...} end)   -- once; recorded in 4-heads.done
--   R.write_result(dir, "heads-vdrl", out, out.rows, {"head", "point", "task", "test_mean"})
local T = require 'tdrl'
local json = require 'tdrl.json'
local fs = require 'tdrl.util.fs'

local E = {}

--- a run folder, created with its parents; returns path
function E.run_dir(path)
  fs.mkdir(path)
  return path
end

--- stage(dir, name, fn): runs fn() unless dir/name.done exists; records its result as JSON
--- there, so that a rerun after Ctrl-C skips finished stages. Returns fn's (or the recorded) result.
--- E.stage_seconds[name]: how long each stage took (also for stages finished by an earlier run)
E.stage_seconds = {}

function E.stage(dir, name, fn)
  local mark = dir .. "/" .. name .. ".done"
  -- under mpirun: rank 0's reading of the folder for every rank, rank 0's messages and writes
  local dist = require 'tdrl.dist'
  local main = dist.is_main()
  local print = main and print or function() end
  local s = dist.broadcast(fs.read(mark) or false)
  if s then
    local ok, v = pcall(json.decode, s)
    if ok then
      print(string.format("[%s] done earlier (delete %s to redo it)", name, mark))
      E.stage_seconds[name] = type(v) == "table" and v._seconds or 0
      return v
    end
  end
  print(string.format("[%s] ...", name))
  local t0 = T.clock()
  local r = fn()
  if r == nil then r = {} end
  local secs = T.clock() - t0
  if type(r) == "table" then r._seconds = secs end
  E.stage_seconds[name] = secs
  if main then fs.write(mark, json.encode(r, "  ") .. "\n") end
  print(string.format("[%s] finished in %.0f s", name, secs))
  return r
end

--- the time of all stages so far, whether run now or by an earlier, interrupted run
function E.total_stage_seconds()
  local s = 0
  for _, v in pairs(E.stage_seconds) do s = s + (v or 0) end
  return s
end

local function csv_cell(v)
  if v == nil then return "" end
  if math.type(v) == "float" then return string.format("%.6g", v) end
  if type(v) == "table" then -- a list: its items separated by spaces
    local items = {}
    for i, x in ipairs(v) do items[i] = csv_cell(x) end
    return table.concat(items, " ")
  end
  local s = tostring(v)
  if s:find('[,"\n]') then s = '"' .. s:gsub('"', '""') .. '"' end
  return s
end

--- write_result(dir, name, value [, rows, columns]): dir/name.json holds value (indented JSON);
--- with rows (a list of tables), dir/name.csv holds one line per row with the given columns
--- (names of the rows' fields; a missing field is an empty cell, floats to 6 digits, a list its
--- items separated by spaces). Under mpirun only rank 0 writes. Returns value.
function E.write_result(dir, name, value, rows, columns)
  if not require('tdrl.dist').is_main() then return value end -- under mpirun, rank 0 writes
  fs.write(dir .. "/" .. name .. ".json", json.encode(value, "  ") .. "\n")
  if rows then
    local lines = {table.concat(columns, ",")}
    for _, r in ipairs(rows) do
      local cells = {}
      for i, c in ipairs(columns) do cells[i] = csv_cell(r[c]) end
      lines[#lines + 1] = table.concat(cells, ",")
    end
    fs.write(dir .. "/" .. name .. ".csv", table.concat(lines, "\n") .. "\n")
  end
  return value
end

return E
