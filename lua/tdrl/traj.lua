-- Trajectories (section 3.1 of the paper): freeze the encoder and map every input to its codes
-- at the time points t_k = k / g, k = 0..g (granularity g; "granularity 1" is the single point
-- t = 0.5). VDRL stores the mean; DRL stores z.
--
--   local traj = require 'tdrl.traj'
--   local tr = traj.extract(model, dataset, {granularity = 10})   -- or {times = {0, 0.5, 1}}
--   tr.codes (N, P, latent), tr.times (P), tr.labels = {task = int64 (N)}, tr.tasks (names in order),
--   tr.classes = {task = number of classes}
--   traj.save("train.safetensors", tr, {checkpoint = path, step = n, config = cfg})
--   local tr = traj.load("train.safetensors")
-- The file is plain safetensors: "codes", "times", "labels.<task>", with the task names, class
-- counts and provenance (checkpoint, step, config) as JSON in the metadata.
local T = require 'tdrl'
local json = require 'tdrl.json'

local M = {}

--- the time points of granularity g: k / g for k = 0..g; g = 1 is the single point 0.5
function M.times(g)
  if type(g) ~= "number" or g < 1 or math.type(g) ~= "integer" then
    error("traj.times: granularity must be a positive integer, got " .. tostring(g), 2)
  end
  if g == 1 then return {0.5} end
  local t = {}
  for k = 0, g do t[#t + 1] = k / g end
  return t
end

local function images_and_labels(ds)
  if T.is_tensor(ds) then return ds, {}, {}, {} end
  if type(ds) == "table" and ds.images then return ds.images, ds.labels or {}, ds.tasks or {}, ds.classes or {} end
  local x, y = ds:tensors()
  local tasks = ds:task_names()
  local classes = {}
  for _, t in ipairs(tasks) do classes[t] = ds.classes and ds.classes[t] or nil end
  return x, y, tasks, classes
end

--- extract(model or encoder, data, {granularity = 10 | times = {...}, batch = 256 (at most), progress = bar-label})
--- data: a tdrl.data view, an (N, C, H, W) tensor, or {images =, labels =, tasks =, classes =}
function M.extract(model, ds, o)
  if type(model) ~= "table" then error("traj.extract: expected a model or an encoder, got " .. type(model), 2) end
  if not (T.is_tensor(ds) or type(ds) == "table") then
    error("traj.extract: expected a data set, a tensor or {images =, ...}, got " .. type(ds), 2)
  end
  if type(ds) == "table" and not ds.images and type(ds.tensors) ~= "function" then
    error("traj.extract: the data has neither images nor a tensors() method", 2)
  end
  if o ~= nil and type(o) ~= "table" then error("traj.extract: options must be a table, got " .. type(o), 2) end
  o = o or {}
  local enc = model.encoder or model
  local times = o.times or M.times(o.granularity or 10)
  local X, labels, tasks, classes = images_and_labels(ds)
  local N, P = X:size(1), #times
  -- the encoder sees at most 256 images at a time: bigger chunks measured no faster and hold
  -- activations in proportion (at 1000, 3.6x the memory of 250 for the tiny encoder)
  local B = math.min(o.batch or 256, 256)
  local was_training = enc.training
  enc:eval()
  local bar = o.progress and require('tdrl.util.progress').new(P * ((N + B - 1) // B), {label = o.progress})
  local cols = {}
  local done = 0
  T.no_grad(function()
    for k, t in ipairs(times) do
      local parts = {}
      for s = 1, N, B do
        local n = math.min(B, N - s + 1)
        local e = enc(X:narrow(1, s, n), T.full({n}, t))
        parts[#parts + 1] = (e.mu or e.z)
        done = done + 1
        if bar then bar:update(done) end
      end
      cols[k] = #parts == 1 and parts[1] or T.cat(parts, 1)
    end
  end)
  if bar then bar:finish() end
  enc:train(was_training)
  return {codes = T.stack(cols, 2), times = T.tensor(times), labels = labels, tasks = tasks, classes = classes}
end

--- save(path, traj, provenance): one safetensors file, written atomically
function M.save(path, tr, provenance)
  if type(path) ~= "string" then error("traj.save: the path must be a string, got " .. type(path), 2) end
  if type(tr) ~= "table" or not T.is_tensor(tr.codes) or not T.is_tensor(tr.times) then
    error("traj.save: " .. path .. ": expected trajectories {codes =, times =, ...}, got " .. type(tr), 2)
  end
  local tensors = {codes = tr.codes:contiguous(), times = tr.times}
  for task, y in pairs(tr.labels or {}) do tensors["labels." .. task] = y end
  T.save(path, tensors, {format = "tdrl.trajectories", tasks = json.encode(tr.tasks or {}),
    classes = json.encode(tr.classes or {}), provenance = json.encode(provenance or {})})
  return path
end

-- A trajectory file is checked field by field on load, so that a damaged one is refused with
-- the file and the field named (codes and labels of different lengths, labels out of range or
-- float, times of the wrong length all loaded without complaint).
local function shape_of(t) return table.concat(t:size(), "x") end

function M.load(path)
  local t, meta = T.load(path)
  if meta.format ~= "tdrl.trajectories" or not t.codes then
    error("traj.load: " .. path .. " is not a trajectory file (no 'codes' tensor or format tag)", 2)
  end
  local function bad(fmt, ...) error("traj.load: " .. path .. ": " .. string.format(fmt, ...), 3) end
  local function field(key, default, kind)
    local ok, v = pcall(json.decode, meta[key] or default)
    if not ok then bad("metadata '%s' is not valid JSON (%s)", key, tostring(v)) end
    if type(v) ~= "table" then bad("metadata '%s' is a %s, not a JSON %s", key, type(v), kind) end
    return v
  end
  local codes, times = t.codes, t.times
  if codes:dtype() ~= "float32" or codes:dim() ~= 3 then
    bad("tensor 'codes' is %s %s, not float32 (N, P, latent)", codes:dtype(), shape_of(codes))
  end
  local N, P = codes:size(1), codes:size(2)
  if not times then bad("tensor 'times' is missing") end
  if times:dtype() ~= "float32" or times:dim() ~= 1 or times:size(1) ~= P then
    bad("tensor 'times' is %s %s; the codes (%s) have %d time points", times:dtype(), shape_of(times), shape_of(codes), P)
  end
  if times:ne(times):sum():item() > 0 then bad("tensor 'times' holds NaN") end
  local tr = {codes = codes, times = times, labels = {}, tasks = field("tasks", "[]", "array"),
    classes = field("classes", "{}", "object"), provenance = field("provenance", "{}", "object")}
  for i, task in ipairs(tr.tasks) do
    if type(task) ~= "string" then bad("metadata 'tasks' entry %d is a %s, not a name", i, type(task)) end
  end
  for task, k in pairs(tr.classes) do
    if math.type(k) ~= "integer" or k < 1 then bad("metadata 'classes' gives task '%s' %s classes", tostring(task), tostring(k)) end
  end
  for k, v in pairs(t) do
    local task = k:match("^labels%.(.+)$")
    if task then
      if v:dtype() ~= "int64" or v:dim() ~= 1 or v:size(1) ~= N then
        bad("tensor '%s' is %s %s; labels are int64 (N) and the codes (%s) hold %d samples", k, v:dtype(), shape_of(v),
          shape_of(codes), N)
      end
      local nc = tr.classes[task]
      if N > 0 and (v:min():item() < 0 or (nc and v:max():item() >= nc)) then
        bad("tensor '%s' holds labels from %d to %d, outside 0..%s", k, v:min():item(), v:max():item(),
          nc and tostring(nc - 1) or "")
      end
      tr.labels[task] = v
    end
  end
  for _, task in ipairs(tr.tasks) do
    if not tr.labels[task] then bad("metadata 'tasks' names '%s' but the file has no tensor 'labels.%s'", task, task) end
  end
  return tr
end

--- a view with only some time points (positions from 1): for MLP-per-point and ablations
function M.select_points(tr, points)
  if type(tr) ~= "table" or not T.is_tensor(tr.codes) or not T.is_tensor(tr.times) then
    error("traj.select_points: expected trajectories {codes =, times =, ...}, got " .. type(tr), 2)
  end
  if type(points) ~= "table" then error("traj.select_points: points must be a list of positions, got " .. type(points), 2) end
  local idx = {}
  for i, p in ipairs(points) do idx[i] = p - 1 end
  local ix = T.tensor(idx, "int64")
  local out = {}
  for k, v in pairs(tr) do out[k] = v end
  out.codes = tr.codes:index_select(2, ix)
  out.times = tr.times:index_select(1, ix)
  return out
end

return M
