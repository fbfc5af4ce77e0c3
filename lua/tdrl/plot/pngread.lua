-- A small PNG reader in pure Lua (8-bit grey, grey+alpha, RGB and RGBA; no interlace):
-- enough to read back figures in tests and to check PNG files written by other tools.
-- Inflate follows RFC 1951 (stored, fixed and dynamic blocks), decoding Huffman codes bit by
-- bit from canonical counts (simple, not fast: about a second per megabyte).
--   pngread.read(path) / pngread.decode(bytes) -> {width=, height=, channels=, data = {bytes}}
--   pngread.info(bytes) -> width, height, bit_depth, colour_type  (IHDR only)
--   img:rgb(x, y) -> r, g, b  (0-based x, y)
local png = require 'tdrl.plot.png'

local M = {}
local byte = string.byte

local function fail(msg)
  error("pngread: " .. msg, 3)
end

-- Huffman table from code lengths: counts per length and symbols in canonical order.
local function huffman(lengths, n)
  local count, symbol, offs = {}, {}, {}
  for l = 0, 15 do count[l] = 0 end
  for s = 0, n - 1 do count[lengths[s] or 0] = count[lengths[s] or 0] + 1 end
  offs[1] = 0
  for l = 1, 14 do offs[l + 1] = offs[l] + count[l] end
  for s = 0, n - 1 do
    local l = lengths[s] or 0
    if l ~= 0 then
      symbol[offs[l]] = s
      offs[l] = offs[l] + 1
    end
  end
  return {count = count, symbol = symbol}
end

local FIXED_LIT, FIXED_DIST
do
  local l = {}
  for s = 0, 143 do l[s] = 8 end
  for s = 144, 255 do l[s] = 9 end
  for s = 256, 279 do l[s] = 7 end
  for s = 280, 287 do l[s] = 8 end
  FIXED_LIT = huffman(l, 288)
  local d = {}
  for s = 0, 29 do d[s] = 5 end
  FIXED_DIST = huffman(d, 30)
end

local ORDER = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}

--- inflates a raw deflate stream starting at byte pos of s; returns a table of bytes
function M.inflate(s, pos)
  local out, n = {}, 0
  local bitbuf, bitcnt = 0, 0
  local function bits(k)
    while bitcnt < k do
      local c = byte(s, pos)
      if not c then fail("compressed data ends early") end
      pos = pos + 1
      bitbuf = bitbuf | (c << bitcnt)
      bitcnt = bitcnt + 8
    end
    local v = bitbuf & ((1 << k) - 1)
    bitbuf = bitbuf >> k
    bitcnt = bitcnt - k
    return v
  end
  local function decode(h)
    local code, first, index = 0, 0, 0
    local count = h.count
    for len = 1, 15 do
      code = code | bits(1)
      local c = count[len]
      if code - c < first then return h.symbol[index + (code - first)] end
      index = index + c
      first = (first + c) << 1
      code = code << 1
    end
    fail("bad Huffman code")
  end
  local LB, LE, DB, DE = png.LEN_BASE, png.LEN_EXTRA, png.DIST_BASE, png.DIST_EXTRA
  repeat
    local final = bits(1)
    local kind = bits(2)
    if kind == 0 then
      bitbuf, bitcnt = 0, 0 -- to a byte boundary
      local len = byte(s, pos) | (byte(s, pos + 1) << 8)
      pos = pos + 4
      for i = pos, pos + len - 1 do n = n + 1; out[n] = byte(s, i) end
      pos = pos + len
    elseif kind == 1 or kind == 2 then
      local lit, dist = FIXED_LIT, FIXED_DIST
      if kind == 2 then
        local nlen, ndist, ncode = bits(5) + 257, bits(5) + 1, bits(4) + 4
        local cl = {}
        for i = 1, ncode do cl[ORDER[i]] = bits(3) end
        local ch = huffman(cl, 19)
        local lengths, i = {}, 0
        while i < nlen + ndist do
          local sym = decode(ch)
          if sym < 16 then lengths[i] = sym; i = i + 1
          else
            local v, rep = 0, 0
            if sym == 16 then
              if i == 0 then fail("repeat with no previous length") end
              v, rep = lengths[i - 1], 3 + bits(2)
            elseif sym == 17 then rep = 3 + bits(3)
            else rep = 11 + bits(7) end
            for _ = 1, rep do lengths[i] = v; i = i + 1 end
          end
        end
        local ll, dl = {}, {}
        for k = 0, nlen - 1 do ll[k] = lengths[k] end
        for k = 0, ndist - 1 do dl[k] = lengths[nlen + k] end
        lit, dist = huffman(ll, nlen), huffman(dl, ndist)
      end
      while true do
        local sym = decode(lit)
        if sym < 256 then n = n + 1; out[n] = sym
        elseif sym == 256 then break
        else
          local li = sym - 256
          if li > 29 then fail("bad length code") end
          local len = LB[li] + bits(LE[li])
          local di = decode(dist) + 1
          if di > 30 then fail("bad distance code") end
          local d = DB[di] + bits(DE[di])
          if d > n then fail("distance beyond the output") end
          for _ = 1, len do n = n + 1; out[n] = out[n - d] end
        end
      end
    else
      fail("bad block type 3")
    end
  until final == 1
  return out, pos
end

local CHANNELS = {[0] = 1, [2] = 3, [4] = 2, [6] = 4}

function M.info(s)
  if type(s) ~= "string" then error("pngread: expected the bytes of a PNG file, got " .. type(s), 3) end
  if s:sub(1, 8) ~= png.SIGNATURE then fail("not a PNG file (signature)") end
  if #s < 33 then fail(string.format("truncated at byte offset %d: the IHDR chunk needs 33 bytes", #s)) end
  if s:sub(13, 16) ~= "IHDR" then fail("first chunk is not IHDR") end
  local w, h, depth, ctype = string.unpack(">I4I4BB", s, 17)
  return w, h, depth, ctype
end

local Image = {}
Image.__index = Image

function Image:rgb(x, y)
  local c = self.channels
  local i = (y * self.width + x) * c + 1
  local d = self.data
  if c <= 2 then return d[i], d[i], d[i] end
  return d[i], d[i + 1], d[i + 2]
end

function M.decode(s)
  local w, h, depth, ctype = M.info(s)
  if depth ~= 8 then fail("bit depth " .. depth .. " is not supported (8 only)") end
  local ch = CHANNELS[ctype]
  if not ch then fail("colour type " .. ctype .. " is not supported") end
  local idat, pos = {}, 9
  while pos <= #s do
    -- every length checked before it is read: a cut file ended in string.unpack's 'data string too short'
    if pos + 7 > #s then fail(string.format("truncated at byte offset %d: a chunk header needs 8 bytes", #s)) end
    local len, kind = string.unpack(">I4c4", s, pos)
    if pos + 11 + len > #s then
      fail(string.format("truncated at byte offset %d: chunk '%s' at byte offset %d needs %d bytes", #s, kind, pos - 1,
        len + 12))
    end
    local data = s:sub(pos + 8, pos + 7 + len)
    local crc = string.unpack(">I4", s, pos + 8 + len)
    if png.crc32(kind .. data) ~= crc then fail("CRC mismatch in chunk " .. kind) end
    if kind == "IDAT" then idat[#idat + 1] = data end
    if kind == "IHDR" and string.byte(data, 13) ~= 0 then fail("interlaced images are not supported") end
    pos = pos + 12 + len
    if kind == "IEND" then break end
  end
  local z = table.concat(idat)
  if #z < 6 or (byte(z, 1) * 256 + byte(z, 2)) % 31 ~= 0 or byte(z, 1) & 0x0F ~= 8 then
    fail("bad zlib header")
  end
  local raw, after = M.inflate(z, 3)
  if after + 3 > #z then fail("compressed data ends before its Adler-32 checksum") end
  local a, b = 1, 0
  for i = 1, #raw do a = (a + raw[i]) % 65521; b = (b + a) % 65521 end
  if string.unpack(">I4", z, after) ~= (b << 16) | a then fail("Adler-32 mismatch") end
  local stride = w * ch
  if #raw ~= h * (stride + 1) then fail(string.format("%d bytes of image data for %dx%d", #raw, w, h)) end
  local data = {}
  for y = 0, h - 1 do
    local f = raw[y * (stride + 1) + 1]
    local src = y * (stride + 1) + 1
    local dst, up = y * stride, (y - 1) * stride
    for i = 1, stride do
      local x = raw[src + i]
      local left = i > ch and data[dst + i - ch] or 0
      local above = y > 0 and data[up + i] or 0
      local ul = (y > 0 and i > ch) and data[up + i - ch] or 0
      if f == 1 then x = x + left
      elseif f == 2 then x = x + above
      elseif f == 3 then x = x + (left + above) // 2
      elseif f == 4 then
        local p = left + above - ul
        local pa, pb, pc = math.abs(p - left), math.abs(p - above), math.abs(p - ul)
        if pa <= pb and pa <= pc then x = x + left elseif pb <= pc then x = x + above else x = x + ul end
      elseif f ~= 0 then fail("bad filter type " .. tostring(f))
      end
      data[dst + i] = x & 0xFF
    end
  end
  return setmetatable({width = w, height = h, channels = ch, data = data}, Image)
end

function M.read(path)
  if type(path) ~= "string" then error("pngread: the path must be a string, got " .. type(path), 2) end
  local f, err = io.open(path, "rb")
  if not f then error("pngread: cannot open " .. tostring(path) .. ": " .. tostring(err), 2) end
  local s = f:read("a")
  f:close()
  local ok, img = pcall(M.decode, s)
  if not ok then error((tostring(img):gsub("pngread: ", "pngread: " .. path:gsub("%%", "%%%%") .. ": ", 1)), 2) end
  return img
end

return M
