-- File I/O from Lua: T.save / T.load (safetensors), T.save_npy / T.load_npy, files written by
-- NumPy (tests/fixtures/numpy, made by make.py there) and the errors of damaged files.
local T = require 'tdrl'

local base = os.tmpname()
os.remove(base)
local made = {}
local function tmp(name)
  local p = base .. "_" .. name
  made[#made + 1] = p
  return p
end

local function write(path, bytes)
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function flat(t)
  local out = {}
  local function walk(v)
    if type(v) == "table" then for _, x in ipairs(v) do walk(x) end else out[#out + 1] = v end
  end
  walk(t:totable())
  return out
end

local function same_shape(t, shape, msg)
  local s = t:size()
  spec.eq(#s, #shape, (msg or "") .. " ndim")
  for i = 1, #shape do spec.eq(s[i], shape[i], (msg or "") .. " size " .. i) end
end

-- int64 values come back to Lua through a double, so beyond 2^53 only that rounding is checked
local function same_int(a, b)
  return a == b or (math.abs(b) > 2 ^ 53 and a == math.tointeger(b + 0.0))
end

local function check_values(t, e, msg)
  spec.eq(t:dtype(), e.dtype, msg .. " dtype")
  same_shape(t, e.shape, msg)
  local v = flat(t)
  spec.eq(#v, #e.values, msg .. " count")
  for i, x in ipairs(e.values) do
    if e.dtype == "int64" then
      spec.truthy(math.type(v[i]) == "integer" and same_int(v[i], x),
        string.format("%s value %d: got %s, expected %s", msg, i, tostring(v[i]), tostring(x)))
    else
      spec.near(v[i], x, 1e-6, msg .. " value " .. i)
    end
  end
end

describe("safetensors", function()
  it("round-trips float32 and int64 tensors with metadata", function()
    local p = tmp("rt.safetensors")
    local w, ids = T.randn(3, 4), T.tensor({{1, -2}, {3, 4000000000}}, "int64")
    T.save(p, {weight = w, ids = ids, scalar = T.tensor(2.5)}, {step = "12", note = "hello \"world\""})
    local ts, meta = T.load(p)
    spec.eq(spec.maxdiff(ts.weight, w), 0, "weight")
    spec.eq(ts.ids:dtype(), "int64")
    spec.eq(spec.maxdiff(ts.ids, ids), 0, "ids")
    spec.eq(ts.scalar:dim(), 0)
    spec.eq(ts.scalar:item(), 2.5)
    spec.eq(meta.step, "12")
    spec.eq(meta.note, "hello \"world\"")
  end)

  it("writes non-contiguous, empty and 8-d tensors correctly", function()
    local p = tmp("shapes.safetensors")
    local a = T.randn(4, 5)
    local at = a:transpose(1, 2)
    spec.truthy(not at:is_contiguous(), "transpose is a strided view")
    local e8 = T.randn(2, 1, 2, 1, 2, 1, 2, 1)
    T.save(p, {t = at, empty = T.zeros(0, 3), eight = e8})
    local ts, meta = T.load(p)
    same_shape(ts.t, {5, 4})
    spec.eq(spec.maxdiff(ts.t, at), 0, "transposed values")
    same_shape(ts.empty, {0, 3})
    spec.eq(ts.empty:numel(), 0)
    spec.eq(spec.maxdiff(ts.eight, e8), 0, "8-d values")
    spec.eq(next(meta), nil, "no metadata")
  end)

  it("writes tensors sorted by name, header padded to 8 bytes", function()
    local p = tmp("sorted.safetensors")
    T.save(p, {zeta = T.zeros(1), alpha = T.zeros(2), mid = T.zeros(3)}, {k = 1.5})
    local s = read(p)
    local n = string.unpack("<I8", s)
    spec.eq(n % 8, 0, "header length multiple of 8")
    local hdr = s:sub(9, 8 + n)
    local a, m, z = hdr:find('"alpha"', 1, true), hdr:find('"mid"', 1, true), hdr:find('"zeta"', 1, true)
    spec.truthy(a and m and z and a < m and m < z, "sorted names in " .. hdr)
    local _, meta = T.load(p)
    spec.eq(meta.k, "1.5", "numbers in metadata are written as strings")
  end)

  it("refuses list-style tables and non-tensors", function()
    local p = tmp("bad_save.safetensors")
    spec.raises(function() T.save(p, {T.zeros(2)}) end, p, "not a list")
    spec.raises(function() T.save(p, {a = 3}) end, p, "'a'", "not a tensor")
    spec.raises(function() T.save(p, {a = T.zeros(1)}, {x = {}}) end, p, "metadata value of 'x'")
    spec.raises(function() T.save(p, {a = T.zeros(1)}, {"v"}) end, p, "metadata")
    spec.raises(function() T.save(p, {__metadata__ = T.zeros(1)}) end, "reserved")
    spec.raises(function() T.save(base .. "_no/such/dir.st", {a = T.zeros(1)}) end, "no/such/dir.st")
  end)

  it("reads a file packed by hand in Python", function()
    local e = dofile("tests/fixtures/numpy/expected.lua")["hand.safetensors"]
    local ts, meta = T.load("tests/fixtures/numpy/hand.safetensors")
    for k, v in pairs(e.meta) do spec.eq(meta[k], v, "metadata " .. k) end
    local n = 0
    for name, ev in pairs(e.tensors) do
      check_values(ts[name], ev, name)
      n = n + 1
    end
    local m = 0
    for _ in pairs(ts) do m = m + 1 end
    spec.eq(m, n, "tensor count")
  end)

  it("rejects damaged files with the file name in the message", function()
    local function st(name, header, data, hlen)
      local p = tmp(name)
      write(p, string.pack("<I8", hlen or #header) .. header .. (data or ""))
      return p
    end
    local p = tmp("short.st")
    write(p, "abc")
    spec.raises(function() T.load(p) end, p, "too short")
    p = st("hlen.st", "{}", "", 4096)
    spec.raises(function() T.load(p) end, p, "header length 4096 is larger than the file")
    p = st("json.st", '{"w": ')
    spec.raises(function() T.load(p) end, p, "invalid JSON header at byte offset")
    p = st("dtype.st", '{"w":{"dtype":"Q8","shape":[1],"data_offsets":[0,1]}}', "x")
    spec.raises(function() T.load(p) end, p, "tensor 'w'", "unsupported dtype 'Q8'")
    p = st("shape.st", '{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,4]}}', "xxxx")
    spec.raises(function() T.load(p) end, p, "tensor 'w'", "shape[0] is not a non-negative integer")
    p = st("size.st", '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', "xxxx")
    spec.raises(function() T.load(p) end, p, "tensor 'w'", "needs 8")
    p = st("range.st", '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', "xxxx")
    spec.raises(function() T.load(p) end, p, "tensor 'w' data_offsets [0, 8] out of range (data section is 4 bytes")
    p = st("meta.st", '{"__metadata__":{"a":1}}')
    spec.raises(function() T.load(p) end, p, "'__metadata__' value of 'a' is not a string")
    spec.raises(function() T.load(base .. "_missing.st") end, "_missing.st", "cannot open")
  end)
end)

describe("npy", function()
  it("round-trips float32, int64, 0-d, empty and strided tensors", function()
    local p = tmp("rt.npy")
    local cases = {
      T.randn(3, 4), T.tensor({-5, 0, 7, 2 ^ 40}, "int64"), T.tensor(-1.25), T.zeros(2, 0),
      T.randn(3, 5):transpose(1, 2), T.randn(2, 1, 2, 1, 2, 1, 2, 1),
    }
    for i, t in ipairs(cases) do
      T.save_npy(p, t)
      local r = T.load_npy(p)
      spec.eq(r:dtype(), t:dtype(), "case " .. i .. " dtype")
      same_shape(r, t:size(), "case " .. i)
      if t:numel() > 0 then spec.eq(spec.maxdiff(r, t), 0, "case " .. i .. " values") end
    end
  end)

  it("writes a NumPy 1.0 header with data aligned to 64 bytes", function()
    local p = tmp("hdr.npy")
    T.save_npy(p, T.zeros(7))
    local s = read(p)
    spec.eq(s:sub(1, 8), "\x93NUMPY\x01\x00")
    local hl = string.unpack("<I2", s, 9)
    spec.eq((10 + hl) % 64, 0)
    spec.truthy(s:find("{'descr': '<f4', 'fortran_order': False, 'shape': (7,), }", 1, true), "header text")
    spec.eq(#s, 10 + hl + 28)
  end)

  it("reads arrays written by NumPy", function()
    local e = dofile("tests/fixtures/numpy/expected.lua")
    local names = {"f4", "f8", "f4_be", "f8_be", "i2_be", "i8", "i4", "u1", "b1", "fortran", "fortran3", "scalar", "empty"}
    for _, name in ipairs(names) do
      local t = T.load_npy("tests/fixtures/numpy/" .. name .. ".npy")
      check_values(t, e[name], name)
    end
  end)

  it("rejects damaged files with the file name and byte offset", function()
    local good = read("tests/fixtures/numpy/f4.npy")
    local p = tmp("trunc.npy")
    write(p, good:sub(1, 128 + 40))
    spec.raises(function() T.load_npy(p) end, p, "truncated data: need 48 bytes at offset 128, file has 40")
    p = tmp("magic.npy")
    write(p, "NUMPY" .. good)
    spec.raises(function() T.load_npy(p) end, p, "bad magic at byte offset 0")
    p = tmp("descr.npy")
    write(p, (good:gsub("<f4", "<c8", 1)))
    spec.raises(function() T.load_npy(p) end, p, "unsupported dtype descr '<c8'")
    p = tmp("shape.npy")
    write(p, (good:gsub("%(3, 4%)", "(3, x)", 1)))
    spec.raises(function() T.load_npy(p) end, p, "bad header at byte offset", "shape")
    p = tmp("empty.npy")
    write(p, "")
    spec.raises(function() T.load_npy(p) end, p, "too short")
    spec.raises(function() T.load_npy(base .. "_missing.npy") end, "_missing.npy", "cannot open")
    spec.raises(function() T.save_npy(base .. "_no/dir.npy", T.zeros(1)) end, "_no/dir.npy")
  end)
end)

for _, p in ipairs(made) do os.remove(p) end
