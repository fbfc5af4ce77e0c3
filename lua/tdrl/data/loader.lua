-- Batches from a data set: (B, C, H, W) float images and {task = int64 tensor (B)} labels,
-- shuffled by a seed, with drop_last; the next batch is produced by a C worker thread while
-- the caller uses the current one (image folders decode in the background).
-- The path for data sets larger than memory: the diffusion trainer and trajectory extraction
-- take whole tensors (ds:tensors()), which the paper's sets fit; a loop over a loader holds a
-- few batches at a time (data_spec: "trains through the loader ... never the whole set").
--
--   local loader = data.loader(ds, {batch_size = 100, shuffle = true, seed = 0})
--   for x, y in loader:iter() do ... end      -- one epoch; each call to iter() is the next epoch
--   local x, y = loader:next()                -- endless stream: epochs follow one another
--   #loader                                   -- batches per epoch
--
-- Options: batch_size (100), shuffle (false), seed (0), drop_last (false), prefetch (true),
-- threads (1: decoding threads of the worker, for image files).
-- Epoch e (from 1) visits positions in the order T.randperm(#ds, T.Generator(seed_e)), with
-- seed_e = data.util.mix(seed, e): reproducible, and unrelated across seeds and epochs.
local T = require 'tdrl'
local C = T._data
local U = require 'tdrl.data.util'

local Loader = {}
Loader.__index = Loader
Loader.__name = "tdrl.data.Loader"

local OPTIONS = {"batch_size", "shuffle", "seed", "drop_last", "prefetch", "threads"}

-- (a data set is known by its metatable's name: tdrl.data.dataset requires this module)
local function is_dataset(v)
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__name == "tdrl.data.Dataset"
end

function Loader.new(ds, opts)
  if not is_dataset(ds) then error("loader: expects a data set, got " .. type(ds), 3) end
  opts = opts or {}
  if type(opts) ~= "table" then error("loader: options must be a table", 3) end
  U.known(opts, OPTIONS, "loader")
  local bs = U.opt(opts, "batch_size", "number", 100, "loader")
  if math.type(bs) ~= "integer" or bs < 1 then error("loader: batch_size must be a positive integer, got " .. bs, 3) end
  local self = setmetatable({}, Loader)
  self.dataset = ds
  self.batch_size = bs
  self.shuffle = U.opt(opts, "shuffle", "boolean", false, "loader")
  self.seed = U.opt(opts, "seed", "number", 0, "loader")
  self.drop_last = U.opt(opts, "drop_last", "boolean", false, "loader")
  self.prefetch = U.opt(opts, "prefetch", "boolean", true, "loader")
  self.threads = U.opt(opts, "threads", "number", 1, "loader")
  self.epoch = 0
  self.active = false
  self.c = C.loader(ds.source, ds.ids, bs, self.drop_last, ds.mean, ds.std, self.prefetch, self.threads)
  return self
end

function Loader:__len() return self.c:batches() end
function Loader:batches() return self.c:batches() end

--- The order of epoch e: nil (in order) or an int64 permutation of 0..#ds-1.
function Loader:order(e)
  if not self.shuffle then return nil end
  return T.randperm(self.dataset.n, T.Generator(U.mix(self.seed, e)))
end

--- Makes the next epoch number e (e.g. when resuming).
function Loader:set_epoch(e)
  self.epoch = e - 1
  self.active = false
end

function Loader:_start()
  self.epoch = self.epoch + 1
  self.c:start(self:order(self.epoch))
  self.active = true
end

function Loader:_next()
  local x, l = self.c:next()
  if not x then
    self.active = false
    return nil
  end
  local y = {}
  for k, t in ipairs(self.dataset.tasks) do y[t] = l[k] end
  return x, y
end

--- Iterator over one epoch: for x, y in loader:iter() do ... end
function Loader:iter()
  self:_start()
  return function()
    if not self.active then return nil end
    return self:_next()
  end
end
Loader.__call = Loader.iter

--- The next batch of an endless stream of epochs.
function Loader:next()
  if self.c:batches() == 0 then error("loader: no batches (" .. self.dataset.n .. " samples, batch_size " ..
    self.batch_size .. (self.drop_last and ", drop_last" or "") .. ")", 2) end
  if not self.active then self:_start() end
  local x, y = self:_next()
  if not x then
    self:_start()
    x, y = self:_next()
  end
  return x, y
end

--- Stops the worker thread now (it also stops when the loader is collected).
function Loader:close()
  self.c:close()
  self.active = false
end
Loader.__close = Loader.close

function Loader:__tostring()
  return string.format("Loader(%s, batch_size %d%s%s, %d batches)", self.dataset.name, self.batch_size,
    self.shuffle and ", shuffled" or "", self.drop_last and ", drop_last" or "", self.c:batches())
end

return Loader
