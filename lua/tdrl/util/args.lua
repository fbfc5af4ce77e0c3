-- Command-line options for example scripts: `--key=value`, `--flag`, `--no-flag`, positional
-- words. Values become numbers or booleans when they look like them; lists are comma-separated
-- ("--lrs=1e-3,5e-4"). parse(arg, defaults) checks every key against the defaults so that a
-- typo is an error naming the option and the known ones.
local M = {}

local function convert(v)
  if type(v) ~= "string" then error("args.convert: expected an option's text, got " .. type(v), 2) end
  if v == "true" then return true end
  if v == "false" then return false end
  local n = tonumber(v)
  if n then return math.tointeger(n) or n end
  if v:find(",", 1, true) then
    local t = {}
    for part in v:gmatch("[^,]+") do t[#t + 1] = convert(part) end
    return t
  end
  return v
end
M.convert = convert

--- parse(argv, defaults [, opts]) -> options table (defaults overridden), positional list,
--- the set of keys given on the command line
--- opts.strict (default true): unknown keys are errors
function M.parse(argv, defaults, opts)
  for i, v in ipairs({argv, defaults, opts}) do
    if v ~= nil and type(v) ~= "table" then
      error(string.format("args.parse: argument %d must be a table (argv, defaults, options), got %s", i, type(v)), 2)
    end
  end
  opts = opts or {}
  local out, pos, given = {}, {}, {}
  for k, v in pairs(defaults or {}) do out[k] = v end
  for _, a in ipairs(argv or {}) do
    local k, v = a:match("^%-%-([%w_%-]+)=(.*)$")
    if not k then
      k = a:match("^%-%-([%w_%-]+)$")
      if k then
        if k:sub(1, 3) == "no-" and defaults and defaults[k:sub(4):gsub("%-", "_")] ~= nil then
          k, v = k:sub(4), "false"
        else
          v = "true"
        end
      end
    end
    if k then
      k = k:gsub("%-", "_")
      if defaults and opts.strict ~= false and defaults[k] == nil and not (opts.allow or {})[k] then
        local known = {}
        for name in pairs(defaults) do known[#known + 1] = "--" .. name end
        table.sort(known)
        error(string.format("unknown option --%s (known: %s)", k, table.concat(known, " ")), 0)
      end
      local val = convert(v)
      if defaults and type(defaults[k]) == "table" and type(val) ~= "table" then val = {val} end
      if defaults and type(defaults[k]) == "string" and type(val) ~= "string" then val = v end
      out[k] = val
      given[k] = true
    else
      pos[#pos + 1] = a
    end
  end
  return out, pos, given
end

--- with_preset(argv, presets_get, extra): options on top of a named preset. The preset is
--- --preset=<name> (default "tiny"); only options given on the command line override it;
--- `extra` holds defaults for script options that no preset has.
function M.with_preset(argv, get, extra)
  if type(get) ~= "function" then error("args.with_preset: expected a preset lookup function, got " .. type(get), 2) end
  local defaults = get("tiny")
  for k, v in pairs(get("small")) do if defaults[k] == nil then defaults[k] = v end end
  for k, v in pairs(extra or {}) do defaults[k] = v end
  local opts, pos, given = M.parse(argv, defaults)
  local cfg = get(opts.preset)
  for k, v in pairs(extra or {}) do cfg[k] = v end
  for k in pairs(given) do cfg[k] = opts[k] end
  return cfg, pos
end

return M
