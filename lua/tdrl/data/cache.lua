-- The data cache: decoded data sets stored once as safetensors files (labels I64 (tasks, N),
-- images U8 (N, C, H, W), string metadata) and mmap'd when opened, so the second use of a set
-- is instant. Folder: $TDRL_DATA, else $XDG_CACHE_HOME/tdrl, else ~/.cache/tdrl. Files are
-- written atomically (temporary file, then rename).
local T = require 'tdrl'
local C = T._data
local U = require 'tdrl.data.util'

local cache = {}

--- The cache folder (not created).
function cache.dir()
  local d = os.getenv("TDRL_DATA")
  if d and d ~= "" then return (d:gsub("/+$", "")) end
  local x = os.getenv("XDG_CACHE_HOME")
  if x and x ~= "" then return (x:gsub("/+$", "")) .. "/tdrl" end
  local home = os.getenv("HOME")
  if not home or home == "" then error("data cache: neither TDRL_DATA nor HOME is set", 2) end
  return home .. "/.cache/tdrl"
end

--- A path inside the cache folder.
function cache.path(...)
  local parts = {cache.dir()}
  for _, p in ipairs({...}) do parts[#parts + 1] = p end
  return table.concat(parts, "/")
end

--- Creates a folder and its parents.
function cache.mkdir(path)
  C.mkdir_p(path)
  return path
end

cache.VERSION = "1"

--- Opens cache entry `name` (a file name without extension) when it exists and its metadata
--- holds every key of `key` with the same value; otherwise calls build() -> source, meta,
--- stores the result and opens it. Returns source, meta. A cache that cannot be written is
--- reported on stderr and the built source is used from memory.
function cache.get(name, key, build)
  local path = cache.path(name .. ".safetensors")
  key = key or {}
  if U.exists(path) then
    local ok, src, meta = pcall(C.open, path)
    if ok then
      local fresh = meta.tdrl_cache == cache.VERSION
      for k, v in pairs(key) do
        if meta[k] ~= tostring(v) then fresh = false end
      end
      if fresh then return src, meta end
    else
      io.stderr:write("tdrl.data: rebuilding damaged cache entry: " .. tostring(src) .. "\n")
    end
  end
  local src, meta = build()
  meta = meta or {}
  for k, v in pairs(key) do meta[k] = tostring(v) end
  meta.tdrl_cache = cache.VERSION
  -- a folder or file that cannot be written leaves the set in memory; any other failure (a
  -- damaged image met while decoding for the cache) is the caller's error
  local ok, err = pcall(C.mkdir_p, cache.dir())
  if ok then ok, err = pcall(src.save, src, path, meta, U.threads()) end
  if not ok then
    err = tostring(err)
    local io_fault = err:find("mkdir: ", 1, true) or err:find("cannot write", 1, true) or
      err:find("write failed", 1, true) or err:find("cannot rename", 1, true)
    if not io_fault then error(err, 0) end
    io.stderr:write("tdrl.data: cannot write the data cache (" .. err .. "); using the set from memory\n")
    return src, meta
  end
  src:close()
  return C.open(path)
end

--- Removes a cache entry; true if there was one.
function cache.remove(name)
  return os.remove(cache.path(name .. ".safetensors")) ~= nil
end

return cache
