-- Small helpers shared by the data modules (not part of the public API).
local T = require 'tdrl'
local C = T._data

local U = {}

--- Mixes a seed with a stream number into a new 63-bit seed (splitmix64 finaliser), so that
--- streams of nearby seeds are unrelated.
function U.mix(seed, k)
  local z = (seed or 0) + 0x9E3779B97F4A7C15 * ((k or 0) + 1)
  z = (z ~ (z >> 30)) * -4658895280553007687 -- 0xBF58476D1CE4E5B9
  z = (z ~ (z >> 27)) * -7723592293110705685 -- 0x94D049BB133111EB
  z = z ~ (z >> 31)
  return z & 0x7FFFFFFFFFFFFFFF
end

--- Quotes a string for /bin/sh.
function U.shq(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- Runs a shell command; returns ok, its output (stdout and stderr together).
function U.run(cmd)
  local f = assert(io.popen(cmd .. " 2>&1", "r"))
  local out = f:read("a")
  local ok = f:close()
  return ok, out
end

function U.exists(path)
  return C.stat(path) ~= nil
end

function U.is_dir(path)
  local size, _, kind = C.stat(path)
  return size ~= nil and kind == "dir"
end

--- FNV-1a 64 of a string, as 16 hex digits.
function U.hash(s)
  local h = -3750763034362895579 -- 0xCBF29CE484222325
  for i = 1, #s do
    h = (h ~ s:byte(i)) * 0x100000001B3
  end
  return string.format("%016x", h)
end

--- sha256 of a file through coreutils' sha256sum (present on every Debian system).
function U.sha256(path)
  local ok, out = U.run("sha256sum " .. U.shq(path))
  local hex = ok and out:match("^(%x+)")
  if not hex or #hex ~= 64 then error("sha256sum " .. path .. " failed: " .. out, 0) end
  return hex
end

--- Reads option `name` from opts with a type check and a default.
function U.opt(opts, name, kind, default, where)
  if type(opts) ~= "table" then
    error(string.format("%s: options must be a table, got %s %s", where, type(opts), tostring(opts)), 3)
  end
  local v = opts[name]
  if v == nil then return default end
  if type(v) ~= kind then
    error(string.format("%s: option '%s' must be a %s, got %s", where, name, kind, type(v)), 3)
  end
  return v
end

--- Rejects option names a function does not know (catches typos such as batchsize).
function U.known(opts, names, where)
  if type(opts) ~= "table" then
    error(string.format("%s: options must be a table, got %s %s", where, type(opts), tostring(opts)), 3)
  end
  local set = {}
  for _, n in ipairs(names) do set[n] = true end
  for k in pairs(opts) do
    if not set[k] then
      table.sort(names)
      error(string.format("%s: unknown option '%s' (known: %s)", where, tostring(k), table.concat(names, ", ")), 3)
    end
  end
end

--- Number of worker threads for decoding: the core's setting (TDRL_NUM_THREADS, checked and
--- bounded there at start-up; read raw here, 100000 would start 100000 decoders).
function U.threads()
  return T.get_num_threads()
end

--- The split a constructor returns: nil -> train, val, test; "train" / "val" / "test" /
--- "trainval" -> that one. parts() gives train, val; the others are thunks too (built lazily).
function U.pick_split(what, split, trainval, parts, test)
  if split == nil then
    local tr, va = parts()
    return tr, va, test()
  elseif split == "train" then
    return (parts())
  elseif split == "val" then
    return select(2, parts())
  elseif split == "test" then
    return test()
  elseif split == "trainval" then
    return trainval()
  end
  error(what .. ": split must be 'train', 'val', 'test' or 'trainval', not '" .. tostring(split) .. "'", 3)
end

--- The constructor of a set of IDX files with a train and a test split (MNIST, Fashion-MNIST):
--- the view of opts.split, or train and test; opts.pad / opts.channels pad the images (ds:pad).
--- source(split, opts) gives the C source, info(split) the Dataset description.
function U.idx_splits(what, opts, Dataset, source, info)
  opts = opts or {}
  U.known(opts, {"split", "dir", "pad", "channels"}, what)
  local split = U.opt(opts, "split", "string", nil, what)
  local function make(s)
    if s ~= "train" and s ~= "test" then error(what .. ": split must be 'train' or 'test', not '" .. s .. "'", 4) end
    local ds = Dataset.new(source(s, opts), info(s))
    if opts.pad or opts.channels then ds = ds:pad(opts.pad or ds.height, opts.channels or 1) end
    return ds
  end
  if split then return make(split) end
  return make("train"), make("test")
end

return U
