-- Small file-system helpers for run folders (no dependency beyond the shell's mkdir).
local M = {}

function M.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

function M.mkdir(path)
  local ok = os.execute("mkdir -p '" .. path:gsub("'", "'\\''") .. "'")
  if not ok then error("cannot create folder " .. path, 2) end
  return path
end

function M.read(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

--- writes atomically: a temporary file in the same folder, then rename
function M.write(path, s)
  local tmp = path .. ".tmp"
  local f = assert(io.open(tmp, "wb"))
  f:write(s)
  f:close()
  assert(os.rename(tmp, path))
end

function M.append(path, s)
  local f = assert(io.open(path, "ab"))
  f:write(s)
  f:close()
end

return M
