-- The data set object: a C source of 8-bit images with integer labels (see ops/io/data.h), a view
-- of some of its samples, task metadata and an optional per-channel normalisation.
--
--   #ds, ds:len()                  number of samples
--   local x, y = ds:get(i)         i from 1; x (C, H, W) float, y = {task = class (from 0)}
--   local xb, yb = ds:batch(pos)   pos: Lua list of positions (from 1) or int64 tensor (from 0);
--                                  xb (B, C, H, W), yb = {task = int64 tensor (B)}
--   ds.tasks, ds.classes           task names in order; classes[task] = number of classes
--   ds:labels(task)                int64 tensor (N) of this set's labels
--   ds:class_counts(task)          {[class] = count}
--   ds:subset(pos), ds:split(sizes[, seed])
--   ds:normalize([mean, std])      a view standardised per channel (computed when not given)
--   ds:stats()                     per-channel mean and std of the raw [0, 1] values
--   ds:pad(size[, channels])       grey images centred on a size x size canvas (3: as RGB)
--   ds:tensors()                   everything at once: (N, C, H, W) and {task = (N)}
--   ds:loader(opts)                see loader.lua
local T = require 'tdrl'
local C = T._data
local U = require 'tdrl.data.util'

local Dataset = {}
Dataset.__index = Dataset
Dataset.__name = "tdrl.data.Dataset"

local function is_dataset(v)
  return getmetatable(v) == Dataset
end
Dataset.is_dataset = is_dataset

--- Wraps a source. info: {name =, tasks = {names}, classes = {count per task, in order},
--- class_names = {task = {names}} (optional)}. Label ranges are checked here.
function Dataset.new(src, info)
  local ntasks = src:ntasks()
  local tasks = info.tasks or {}
  if #tasks ~= ntasks then
    error(string.format("dataset %s: %d task names for %d label columns", info.name or src:what(), #tasks, ntasks), 2)
  end
  local self = setmetatable({}, Dataset)
  self.source = src
  self.name = info.name or src:what()
  self.tasks = {}
  self.classes = {}
  self.class_names = info.class_names or {}
  self._col = {}
  for k, t in ipairs(tasks) do
    local nc = info.classes and info.classes[k]
    if nc then src:check_labels(k, nc) end
    self.tasks[k] = t
    self.classes[t] = nc
    self._col[t] = k
  end
  self.channels, self.height, self.width = src:shape()
  self.shape = {self.channels, self.height, self.width}
  self.n = src:len()
  self.ids = nil -- int64 tensor of source ids (from 0), nil: all samples in order
  self.mean, self.std = nil, nil
  return self
end

--- A shallow copy that shares the source.
function Dataset:_derive(fields)
  local d = setmetatable({}, Dataset)
  for k, v in pairs(self) do d[k] = v end
  for k, v in pairs(fields or {}) do d[k] = v end
  return d
end

function Dataset:len() return self.n end
Dataset.__len = Dataset.len

function Dataset:__tostring()
  local parts = {}
  for _, t in ipairs(self.tasks) do
    parts[#parts + 1] = string.format("%s(%s)", t, tostring(self.classes[t] or "?"))
  end
  local norm = self.mean and ", normalised" or ""
  return string.format("%s: %d images %dx%dx%d%s; tasks %s", self.name, self.n, self.channels, self.height,
    self.width, norm, #parts > 0 and table.concat(parts, " ") or "none")
end

--- Source ids (int64, from 0) of all samples, or nil when the view is the whole source in order.
function Dataset:source_ids()
  return self.ids
end

--- Positions -> source ids (int64 tensor).
function Dataset:_ids(pos, where)
  local t
  if T.is_tensor(pos) then
    if pos:dtype() ~= "int64" or pos:dim() ~= 1 then
      error(where .. ": positions must be a Lua list (from 1) or a 1-D int64 tensor (from 0)", 3)
    end
    t = pos
    if t:numel() > 0 then
      local lo, hi = t:min():item(), t:max():item()
      if lo < 0 or hi >= self.n then
        error(string.format("%s: position %d out of range 0..%d (int64 positions count from 0)", where,
          lo < 0 and lo or hi, self.n - 1), 3)
      end
    end
  elseif type(pos) == "table" then
    local z = {}
    for i, p in ipairs(pos) do
      if math.type(p) ~= "integer" or p < 1 or p > self.n then
        error(string.format("%s: position %s (entry %d) out of range 1..%d", where, tostring(p), i, self.n), 3)
      end
      z[i] = p - 1
    end
    t = #z > 0 and T.tensor(z, "int64") or T.zeros(0, "int64")
  else
    error(where .. ": positions must be a Lua list (from 1) or a 1-D int64 tensor (from 0), got " .. type(pos), 3)
  end
  if self.ids then return self.ids:index_select(1, t) end
  return t
end

function Dataset:_named(list)
  local y = {}
  for k, t in ipairs(self.tasks) do y[t] = list[k] end
  return y
end

--- Batch of samples: (B, C, H, W) float and {task = int64 tensor (B)}.
function Dataset:batch(pos)
  local ids = self:_ids(pos, "batch")
  local x, l = self.source:fill(ids, self.mean, self.std)
  return x, self:_named(l)
end

--- Sample i (from 1): (C, H, W) float and {task = class}.
function Dataset:get(i)
  if math.type(i) ~= "integer" or i < 1 or i > self.n then
    error(string.format("get: index %s out of range 1..%d (%s)", tostring(i), self.n, self.name), 2)
  end
  local x, y = self:batch({i})
  local labels = {}
  for t, v in pairs(y) do labels[t] = v:get(1) end
  return x:view(self.channels, self.height, self.width), labels
end

--- All images and labels of the view.
function Dataset:tensors()
  local ids = self.ids or T.arange(0, self.n, 1, "int64")
  local x, l = self.source:fill(ids, self.mean, self.std)
  return x, self:_named(l)
end

function Dataset:_task_col(task, where)
  local k = self._col[task]
  if not k then
    error(string.format("%s: unknown task '%s' (tasks of %s: %s)", where, tostring(task), self.name,
      table.concat(self.tasks, ", ")), 3)
  end
  return k
end

--- int64 tensor (N) of the labels of one task.
function Dataset:labels(task)
  local all = self.source:labels(self:_task_col(task, "labels"))
  if self.ids then return all:index_select(1, self.ids) end
  return all
end

--- {[class] = count} for one task (classes count from 0; absent classes have count 0).
function Dataset:class_counts(task)
  local l = self:labels(task)
  local counts = {}
  local nc = self.classes[task]
  if nc then
    for c = 0, nc - 1 do counts[c] = 0 end
  end
  for _, v in ipairs(l:tolist()) do counts[v] = (counts[v] or 0) + 1 end
  return counts
end

function Dataset:task_names()
  return {table.unpack(self.tasks)}
end

--- A view of some samples (positions as in batch()).
function Dataset:subset(pos, name)
  local ids = self:_ids(pos, "subset")
  return self:_derive({ids = ids, n = ids:numel(), name = name or (self.name .. "[subset]")})
end

--- Splits into consecutive parts of the given sizes (counts summing to #ds, or fractions summing
--- to 1), after a shuffle by `seed` (default 0; false keeps the order). Returns the parts.
function Dataset:split(sizes, seed, names)
  if type(sizes) ~= "table" or #sizes == 0 then error("split: sizes must be a list of counts or fractions", 2) end
  local counts, total = {}, 0
  local fractions = false
  for i, s in ipairs(sizes) do
    if type(s) ~= "number" or s < 0 then error("split: size " .. i .. " is not a non-negative number", 2) end
    if math.type(s) == "float" then fractions = true end
  end
  if fractions then
    local sum = 0
    for _, s in ipairs(sizes) do sum = sum + s end
    if math.abs(sum - 1) > 1e-6 then error(string.format("split: fractions sum to %g, not 1", sum), 2) end
    local acc = 0
    for i, s in ipairs(sizes) do
      local hi = (i == #sizes) and self.n or math.floor((acc + s) * self.n + 0.5)
      counts[i] = hi - math.floor(acc * self.n + 0.5)
      acc = acc + s
    end
  else
    for i, s in ipairs(sizes) do counts[i] = s end
  end
  for _, c in ipairs(counts) do total = total + c end
  if total ~= self.n then
    error(string.format("split: sizes sum to %d, but %s holds %d samples", total, self.name, self.n), 2)
  end
  local order
  if seed == false then
    order = T.arange(0, self.n, 1, "int64")
  else
    order = T.randperm(self.n, T.Generator(seed or 0))
  end
  local parts, start = {}, 0
  for i, c in ipairs(counts) do
    local pos = order:narrow(1, start + 1, c)
    if c == 0 then pos = T.zeros(0, "int64") end
    parts[i] = self:subset(pos:contiguous(), names and names[i] or string.format("%s[part %d]", self.name, i))
    start = start + c
  end
  return table.unpack(parts)
end

--- Per-channel mean and standard deviation of the raw values in [0, 1] over this view.
function Dataset:stats()
  return self.source:stats(self.ids)
end

--- A view whose images are (x - mean[c]) / std[c]; mean and std are lists with one number per
--- channel, computed over this view when not given (use the training set's for the others).
function Dataset:normalize(mean, std)
  if type(mean) == "table" and mean.mean then mean, std = mean.mean, mean.std end
  if mean == nil then mean, std = self:stats() end
  if type(mean) == "number" then
    local m, s = {}, {}
    for c = 1, self.channels do m[c], s[c] = mean, std end
    mean, std = m, s
  end
  if type(mean) ~= "table" or type(std) ~= "table" or #mean ~= self.channels or #std ~= self.channels then
    error(string.format("normalize: mean and std need %d values each", self.channels), 2)
  end
  for c = 1, self.channels do
    if not (std[c] > 0) then error(string.format("normalize: std[%d] = %s must be > 0", c, tostring(std[c])), 2) end
  end
  return self:_derive({mean = {table.unpack(mean)}, std = {table.unpack(std)}})
end

--- The same view without normalisation.
function Dataset:raw()
  local d = self:_derive()
  d.mean, d.std = nil, nil
  return d
end

--- Grey images centred on a black size x size canvas, with `channels` (1, or 3: the grey level
--- copied to R, G and B), e.g. MNIST's 28 x 28 as 3 x 32 x 32. Same samples, same labels.
function Dataset:pad(size, channels)
  if self.channels ~= 1 or self.source:kind() ~= "bytes" then
    error("pad: needs a grey data set held in memory (" .. self.name .. " is " .. self.channels .. " channels, "
      .. self.source:kind() .. ")", 2)
  end
  local src = C.pad_source(self.source, size, channels or 1)
  local d = self:_derive({source = src})
  d.channels, d.height, d.width = src:shape()
  d.shape = {d.channels, d.height, d.width}
  if d.mean then -- a normalisation of one channel extends to the copies
    local m, s = {}, {}
    for c = 1, d.channels do m[c], s[c] = self.mean[1], self.std[1] end
    d.mean, d.std = m, s
  end
  return d
end

--- A loader over this view (see tdrl.data.loader).
function Dataset:loader(opts)
  return require('tdrl.data.loader').new(self, opts)
end

--- Writes the view's samples to a cache file (safetensors: "labels" I64 (tasks, N), "images"
--- U8 (N, C, H, W)) that data.open() reopens instantly.
function Dataset:save(path)
  local src = self.source
  if self.ids then
    -- materialise the view: a bytes source holding just these samples
    local x, l = self.source:fill(self.ids)
    local lab = {}
    for k = 1, #self.tasks do lab[k] = l[k]:view(1, -1) end
    src = C.bytes_source(x, #lab > 0 and T.cat(lab, 1) or T.zeros(0, self.n, "int64"), self.name)
  end
  local cn = {}
  for k, t in ipairs(self.tasks) do cn[k] = tostring(self.classes[t] or 0) end
  src:save(path, {tdrl_data = "1", name = self.name, tasks = table.concat(self.tasks, ","),
    classes = table.concat(cn, ",")}, U.threads())
end

return Dataset
