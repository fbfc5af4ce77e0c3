-- A small spec runner: `tdrl tests/lua/spec.lua file_spec.lua`. A spec file calls
-- describe(name, fn) / it(name, fn) and the assertion helpers below; each `it` prints one
-- "ok - " or "not ok - " line (counted by tests/run.sh).
local spec = {}
local prefix = {}
local failures = 0

function spec.describe(name, fn)
  prefix[#prefix + 1] = name
  fn()
  prefix[#prefix] = nil
end

function spec.it(name, fn)
  local full = table.concat(prefix, " ") .. " " .. name
  local ok, err = xpcall(fn, debug.traceback)
  if ok then
    print("ok - " .. full)
  else
    failures = failures + 1
    print("not ok - " .. full .. "\n" .. tostring(err):gsub("\n", "\n#   "))
  end
end

local function fmt(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

function spec.eq(a, b, msg)
  if a ~= b then error((msg or "values differ") .. ": got " .. fmt(a) .. ", expected " .. fmt(b), 2) end
end

function spec.near(a, b, tol, msg)
  tol = tol or 1e-5
  if not (math.abs(a - b) <= tol * (1 + math.abs(b))) then
    error(string.format("%s: got %.8g, expected %.8g (tol %g)", msg or "not near", a, b, tol), 2)
  end
end

function spec.truthy(v, msg)
  if not v then error(msg or "expected a true value", 2) end
end

-- Asserts that fn raises an error whose message contains every given plain substring.
function spec.raises(fn, ...)
  local ok, err = pcall(fn)
  if ok then error("expected an error, none was raised", 2) end
  err = tostring(err)
  for _, s in ipairs({...}) do
    if not err:find(s, 1, true) then
      error("error message " .. fmt(err) .. " lacks " .. fmt(s), 2)
    end
  end
  return err
end

-- Largest absolute difference between two tensors (or tensor and nested table).
function spec.maxdiff(a, b)
  local T = require 'tdrl'
  if type(b) == "table" then b = T.tensor(b) end
  return (a - b):abs():max():item()
end

function spec.tensor_near(a, b, tol, msg)
  local d = spec.maxdiff(a, b)
  if not (d <= (tol or 1e-5)) then
    error(string.format("%s: max difference %.3g > %.3g", msg or "tensors differ", d, tol or 1e-5), 2)
  end
  return d
end

local file = arg[1]
assert(file, "usage: tdrl tests/lua/spec.lua FILE_spec.lua")
local chunk, err = loadfile(file, "t", setmetatable({spec = spec, describe = spec.describe, it = spec.it},
  {__index = _G}))
if not chunk then
  print("not ok - loading " .. file .. ": " .. err)
  os.exit(1)
end
local ok, e = xpcall(chunk, debug.traceback)
if not ok then
  print("not ok - running " .. file .. ": " .. tostring(e))
  failures = failures + 1
end
os.exit(failures == 0 and 0 or 1)
