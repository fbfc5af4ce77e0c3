-- Checkpoints: model, optimiser, EMA, schedule, random generators, step and config in ONE
-- safetensors file (written atomically by T.save: temporary file, fsync, rename), readable from
-- Python (`safetensors.torch.load_file`; the metadata values are JSON text).
--
--   checkpoint.save(path, {model = m, optimizer = opt, ema = ema, schedule = sched,
--                          generators = {data = g1, dropout = g2}, step = 1000, config = cfg,
--                          extra = {name = tensor}, meta = {key = "string"}})
--   local ck = checkpoint.load(path)                  -- read only
--   local ck = checkpoint.load(path, {model = m, optimizer = opt, ema = ema, schedule = sched,
--                                     generators = {data = g1, dropout = g2}})  -- and restore
--   ck.step, ck.config, ck.model (name -> tensor), ck.optimizer, ck.ema, ck.schedule, ck.extra
--
-- Layout: tensors "model.<param name>", "optimizer.state.<i>.exp_avg", "ema.shadow.<name>",
-- "rng.<generator name>" (int64 state), "extra.<name>"; metadata "format" = "tdrl.checkpoint",
-- "version", "step", and JSON for "config", "optimizer", "ema", "schedule" (tensors inside those
-- appear as {"$tensor": "<name>"}). The config is parsed back by a JSON reader, never by load().
local T = require 'tdrl'

local M = {}
M.FORMAT = "tdrl.checkpoint"
M.VERSION = 1

-- ---- JSON: tdrl.json (kept under the old names for callers of this module) ------------------------
local json = require 'tdrl.json'
M.json_encode = json.encode
M.json_decode = json.decode

-- ---- tensors inside state tables -------------------------------------------------------------------
-- Replaces every tensor of a nested table by {["$tensor"] = name}, collecting name -> tensor.
local function split_tensors(v, prefix, tensors)
  if T.is_tensor(v) then
    if tensors[prefix] ~= nil then error("checkpoint: two tensors named " .. prefix, 0) end
    tensors[prefix] = v
    return {["$tensor"] = prefix}
  end
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = split_tensors(x, prefix .. "." .. tostring(k), tensors) end
  return out
end

local function join_tensors(v, tensors, what)
  if type(v) ~= "table" then return v end
  local ref = v["$tensor"]
  if ref ~= nil then
    local t = tensors[ref]
    if t == nil then error(string.format("checkpoint: %s refers to tensor '%s', which the file lacks", what, ref), 0) end
    return t
  end
  local out = {}
  for k, x in pairs(v) do out[k] = join_tensors(x, tensors, what) end
  return out
end

local function is_module(v) return type(v) == "table" and type(v.state_dict) == "function" and type(v.named_parameters) == "function" end

-- ---- save ----------------------------------------------------------------------------------------
--- save(path, {model=, optimizer=, ema=, schedule=, generators = {name = g}, step=, config=, extra=, meta=})
function M.save(path, what)
  if type(path) ~= "string" then error("checkpoint.save: the path must be a string", 2) end
  if type(what) ~= "table" then error("checkpoint.save: expected a table {model = ..., optimizer = ..., ...}", 2) end
  local tensors = {}
  local meta = {format = M.FORMAT, version = tostring(M.VERSION)}
  local ok, err = pcall(function()
    if what.model ~= nil then
      local sd
      if is_module(what.model) then sd = what.model:state_dict() else sd = what.model end
      local names = {}
      for name, t in pairs(sd) do
        if not T.is_tensor(t) then error("checkpoint.save: model entry " .. tostring(name) .. " is not a tensor", 0) end
        tensors["model." .. name] = t
        names[#names + 1] = name
      end
      meta.model = tostring(#names)
    end
    for _, key in ipairs({"optimizer", "ema", "schedule"}) do
      local obj = what[key]
      if key == "schedule" and obj == nil then obj = what.scheduler end
      if obj ~= nil then
        local sd = type(obj.state_dict) == "function" and obj:state_dict() or obj
        meta[key] = M.json_encode(split_tensors(sd, key, tensors))
      end
    end
    if what.generators ~= nil then
      local names = {}
      for name, g in pairs(what.generators) do
        if type(name) ~= "string" then error("checkpoint.save: generators must be named ({data = g, ...})", 0) end
        tensors["rng." .. name] = g:get_state()
        names[#names + 1] = name
      end
      table.sort(names)
      meta.generators = M.json_encode(names)
    end
    if what.extra ~= nil then
      for name, t in pairs(what.extra) do
        if not T.is_tensor(t) then error("checkpoint.save: extra entry " .. tostring(name) .. " is not a tensor", 0) end
        tensors["extra." .. name] = t
      end
    end
    if what.step ~= nil then
      if math.type(what.step) ~= "integer" then error("checkpoint.save: step must be an integer", 0) end
      meta.step = tostring(what.step)
    end
    if what.config ~= nil then meta.config = M.json_encode(what.config) end
    if what.meta ~= nil then
      for k, v in pairs(what.meta) do
        if meta[k] ~= nil then error("checkpoint.save: meta key '" .. tostring(k) .. "' is reserved", 0) end
        meta[k] = tostring(v)
      end
    end
  end)
  if not ok then error(tostring(err), 2) end
  T.save(path, tensors, meta)
  return path
end

-- ---- load ----------------------------------------------------------------------------------------
local function decode_field(meta, key, path)
  local s = meta[key]
  if s == nil then return nil end
  local ok, v = pcall(M.json_decode, s)
  if not ok then error(string.format("checkpoint.load: %s: metadata '%s' is not valid JSON (%s)", path, key, v), 0) end
  return v
end

-- Fields a damaged or hand-edited file can get wrong, checked on load so that the error names
-- the file and the field ('step' = "abc", "-5" or "1e300" loaded as nil or as a negative step).
local function check_count(v, path, field)
  local n = math.type(v) == "integer" and v or (type(v) == "number" and math.tointeger(v))
  if not n or n < 0 then
    error(string.format("checkpoint.load: %s: %s is %s, not a non-negative integer", path, field,
      type(v) == "string" and string.format("%q", v) or tostring(v)), 0)
  end
  return n
end

local function check_step(s, path)
  if s == nil then return nil end
  if type(s) ~= "string" or not s:match("^%d+$") or not math.tointeger(tonumber(s)) then
    error(string.format("checkpoint.load: %s: metadata 'step' is %q, not a non-negative integer", path, tostring(s)), 0)
  end
  return math.tointeger(tonumber(s))
end

local function check_optimizer(o, path)
  if type(o) ~= "table" then
    error(string.format("checkpoint.load: %s: metadata 'optimizer' is a %s, not an object", path, type(o)), 0)
  end
  if type(o.param_groups) ~= "table" then
    error(string.format("checkpoint.load: %s: metadata 'optimizer' has no param_groups list", path), 0)
  end
  for i, e in pairs(o.state or {}) do
    if type(e) ~= "table" then
      error(string.format("checkpoint.load: %s: optimizer.state.%s is a %s, not an object", path, tostring(i), type(e)), 0)
    end
    for k, v in pairs(e) do
      if not T.is_tensor(v) then check_count(v, path, string.format("optimizer.state.%s.%s", tostring(i), k)) end
    end
  end
end

--- load(path [, targets]) -> checkpoint table; with targets {model=, optimizer=, ema=, schedule=,
--- generators = {name = g}, strict = true} the state is restored into them
function M.load(path, targets)
  if type(path) ~= "string" then error("checkpoint.load: the path must be a string", 2) end
  local ok, tensors, meta = pcall(T.load, path)
  if not ok then error("checkpoint.load: " .. tostring(tensors), 2) end
  if meta.format ~= M.FORMAT then
    error(string.format("checkpoint.load: %s is not a tdrl checkpoint (metadata 'format' is %s)", path,
      meta.format and ("'" .. meta.format .. "'") or "absent"), 2)
  end
  local version = tonumber(meta.version)
  if not version or version > M.VERSION then
    error(string.format("checkpoint.load: %s has format version %s; this tdrl reads up to %d", path,
      tostring(meta.version), M.VERSION), 2)
  end
  local ck = {path = path, meta = meta, model = {}, extra = {}, generators = {}}
  local r_ok, r_err = pcall(function()
    for name, t in pairs(tensors) do
      local group, rest = name:match("^([^.]+)%.(.+)$")
      if group == "model" then ck.model[rest] = t
      elseif group == "extra" then ck.extra[rest] = t
      elseif group == "rng" then
        if t:dtype() ~= "int64" or t:dim() ~= 1 or t:numel() ~= 7 then
          error(string.format("checkpoint.load: %s: tensor '%s' must be an int64 generator state of 7 values, got %s %s",
            path, name, t:dtype(), table.concat(t:size(), "x")), 0)
        end
        local v = t:totable()
        if v[1] == 0 and v[2] == 0 and v[3] == 0 and v[4] == 0 then
          error(string.format("checkpoint.load: %s: tensor '%s' is a generator state of zeros, which never changes",
            path, name), 0)
        end
        ck.generators[rest] = t
      end
    end
    if meta.model == nil then ck.model = nil end
    ck.step = check_step(meta.step, path)
    ck.config = decode_field(meta, "config", path)
    for _, key in ipairs({"optimizer", "ema", "schedule"}) do
      local v = decode_field(meta, key, path)
      if v ~= nil then ck[key] = join_tensors(v, tensors, path .. ": " .. key) end
    end
    if ck.optimizer ~= nil then check_optimizer(ck.optimizer, path) end
  end)
  if not r_ok then error(tostring(r_err), 2) end
  if targets then
    local a_ok, a_err = pcall(M.restore, ck, targets)
    if not a_ok then
      -- a module's or optimiser's own message (load_state_dict (Sequential): ...) gets the file
      a_err = tostring(a_err)
      if not a_err:find(path, 1, true) then a_err = "checkpoint.load: " .. path .. ": " .. a_err end
      error(a_err, 2)
    end
  end
  return ck
end

--- restore(ck, {model=, optimizer=, ema=, schedule=, generators=, strict = true}): puts a loaded
--- checkpoint's state into live objects (everything is checked before the model is changed)
function M.restore(ck, targets)
  if type(ck) ~= "table" then error("checkpoint.restore: expected a loaded checkpoint, got " .. type(ck), 2) end
  if type(targets) ~= "table" then error("checkpoint.restore: expected targets {model =, ...}, got " .. type(targets), 2) end
  local p = ck.path or "checkpoint"
  local function need(key)
    if ck[key] == nil then error(string.format("checkpoint: %s holds no %s state", p, key), 0) end
  end
  if targets.model then need("model") end
  if targets.optimizer then need("optimizer") end
  if targets.ema then need("ema") end
  local sched = targets.schedule or targets.scheduler
  if sched then need("schedule") end
  if targets.generators then
    for name in pairs(targets.generators) do
      if ck.generators[name] == nil then
        error(string.format("checkpoint: %s holds no state for generator '%s'", p, name), 0)
      end
    end
  end
  if targets.model then targets.model:load_state_dict(ck.model, targets.strict ~= false) end
  if targets.optimizer then targets.optimizer:load_state_dict(ck.optimizer) end
  if targets.ema then targets.ema:load_state_dict(ck.ema) end
  if sched then sched:load_state_dict(ck.schedule) end
  if targets.generators then
    for name, g in pairs(targets.generators) do
      local ok, err = pcall(g.set_state, g, ck.generators[name])
      if not ok then error(string.format("checkpoint: %s: tensor 'rng.%s': %s", p, name, tostring(err)), 0) end
    end
  end
  return ck
end

return M
