-- JSON for configs, metrics logs, checkpoint and trajectory metadata, benchmark rows.
--   json.encode(value [, indent]) -> text;  json.decode(text) -> value
local M = {}

--- a value that encodes as null (nil cannot be stored in a Lua table)
M.null = setmetatable({}, {__tostring = function() return "null" end})

local escapes = {['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f', ['\n'] = '\\n', ['\r'] = '\\r',
                 ['\t'] = '\\t'}

local function encode_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return escapes[c] or string.format("\\u%04x", c:byte()) end) .. '"'
end

-- the shortest text that reads back as the same float
local function encode_number(v)
  if math.type(v) == "integer" then return string.format("%d", v) end
  if v ~= v then return "NaN" end
  if v == math.huge then return "Infinity" end
  if v == -math.huge then return "-Infinity" end
  local s
  for _, p in ipairs({"%.15g", "%.16g", "%.17g"}) do
    s = string.format(p, v)
    if tonumber(s) == v then break end
  end
  if not s:find("[%.eEn]") then s = s .. ".0" end
  return s
end

local function is_array(t)
  local n = #t
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count == n, n
end

local function encode(v, path, out, seen, indent, depth)
  local ty = type(v)
  local nl = indent and ("\n" .. string.rep(indent, depth + 1)) or ""
  local close = indent and ("\n" .. string.rep(indent, depth)) or ""
  if v == nil or v == M.null then out[#out + 1] = "null"
  elseif ty == "boolean" then out[#out + 1] = tostring(v)
  elseif ty == "number" then out[#out + 1] = encode_number(v)
  elseif ty == "string" then out[#out + 1] = encode_string(v)
  elseif ty == "table" then
    if seen[v] then error("json: a table contains itself at " .. path, 0) end
    seen[v] = true
    local arr, n = is_array(v)
    if arr and n == 0 then
      out[#out + 1] = "[]"
    elseif arr then
      out[#out + 1] = "["
      for i = 1, n do
        out[#out + 1] = (i > 1 and "," or "") .. nl
        encode(v[i], path .. "[" .. i .. "]", out, seen, indent, depth + 1)
      end
      out[#out + 1] = close .. "]"
    else
      local keys = {}
      for k in pairs(v) do
        local kt = type(k)
        if kt ~= "string" and kt ~= "number" then
          error("json: a key of type " .. kt .. " at " .. path .. " cannot be written", 0)
        end
        keys[#keys + 1] = k
      end
      table.sort(keys, function(a, b)
        if type(a) == type(b) then return a < b end
        return type(a) == "number"
      end)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        out[#out + 1] = (i > 1 and "," or "") .. nl
        local ks = type(k) == "string" and k or encode_number(k)
        out[#out + 1] = encode_string(ks)
        out[#out + 1] = indent and ": " or ":"
        encode(v[k], path .. "." .. ks, out, seen, indent, depth + 1)
      end
      out[#out + 1] = close .. "}"
    end
    seen[v] = nil
  else
    error("json: a " .. ty .. " at " .. path .. " cannot be written (only tables, strings, numbers, booleans)", 0)
  end
end

--- encode(value [, indent]) -> text. Keys sorted (deterministic output); integers stay integers
--- and floats read back exactly; inf and nan are written as Infinity and NaN, as Python's json
--- does; an empty table is []. indent (e.g. "  ") pretty-prints.
function M.encode(v, indent)
  local out = {}
  encode(v, "value", out, {}, indent, 0)
  return table.concat(out)
end

local function utf8_of(cp) return utf8.char(cp) end

--- decode(text) -> value (a plain recursive-descent reader; nothing is executed). null becomes
--- nil; numbers with a '.' or an exponent are floats, others integers. Errors name the byte offset.
function M.decode(s)
  if type(s) ~= "string" then error("json: expected a string, got " .. type(s), 2) end
  local pos = 1
  local function fail(msg) error(string.format("json: %s at byte offset %d", msg, pos - 1), 0) end
  local function ws() pos = s:find("[^ \t\r\n]", pos) or #s + 1 end
  local value
  local function str()
    pos = pos + 1
    local buf = {}
    while true do
      local c = s:sub(pos, pos)
      if c == "" then fail("unterminated string") end
      if c == '"' then pos = pos + 1; break end
      if c == "\\" then
        local e = s:sub(pos + 1, pos + 1)
        local simple = ({['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f', n = '\n', r = '\r', t = '\t'})[e]
        if simple then buf[#buf + 1] = simple; pos = pos + 2
        elseif e == "u" then
          local hex = s:sub(pos + 2, pos + 5)
          if not hex:match("^%x%x%x%x$") then fail("bad \\u escape") end
          local cp = tonumber(hex, 16)
          pos = pos + 6
          if cp >= 0xD800 and cp <= 0xDBFF and s:sub(pos, pos + 1) == "\\u" then
            local lo = tonumber(s:sub(pos + 2, pos + 5), 16)
            if lo and lo >= 0xDC00 and lo <= 0xDFFF then
              cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
              pos = pos + 6
            end
          end
          buf[#buf + 1] = utf8_of(cp)
        else fail("bad escape \\" .. e) end
      else
        local j = s:find('["\\]', pos) or #s + 1
        buf[#buf + 1] = s:sub(pos, j - 1)
        pos = j
      end
    end
    return table.concat(buf)
  end
  local function num()
    local lit = s:match("^-?Infinity", pos)
    if lit then pos = pos + #lit; return lit:sub(1, 1) == "-" and -math.huge or math.huge end
    if s:sub(pos, pos + 2) == "NaN" then pos = pos + 3; return 0 / 0 end
    local t = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
    if not t or t == "" or t == "-" then fail("bad number") end
    pos = pos + #t
    local v = tonumber(t) -- nil for a cut exponent ("1e", "1.e+"), which the pattern lets through
    if v == nil then fail("bad number '" .. t .. "'") end
    if t:find("[%.eE]") then v = v + 0.0 else v = math.tointeger(v) or v end
    return v
  end
  function value(depth)
    if depth > 200 then fail("nesting too deep") end
    ws()
    local c = s:sub(pos, pos)
    if c == "{" then
      pos = pos + 1
      local t = {}
      ws()
      if s:sub(pos, pos) == "}" then pos = pos + 1; return t end
      while true do
        ws()
        if s:sub(pos, pos) ~= '"' then fail("expected a key") end
        local k = str()
        ws()
        if s:sub(pos, pos) ~= ":" then fail("expected ':'") end
        pos = pos + 1
        t[k] = value(depth + 1)
        ws()
        local d = s:sub(pos, pos)
        pos = pos + 1
        if d == "}" then return t end
        if d ~= "," then fail("expected ',' or '}'") end
      end
    elseif c == "[" then
      pos = pos + 1
      local t, n = {}, 0
      ws()
      if s:sub(pos, pos) == "]" then pos = pos + 1; return t end
      while true do
        n = n + 1
        t[n] = value(depth + 1)
        ws()
        local d = s:sub(pos, pos)
        pos = pos + 1
        if d == "]" then return t end
        if d ~= "," then fail("expected ',' or ']'") end
      end
    elseif c == '"' then return str()
    elseif s:sub(pos, pos + 3) == "true" then pos = pos + 4; return true
    elseif s:sub(pos, pos + 4) == "false" then pos = pos + 5; return false
    elseif s:sub(pos, pos + 3) == "null" then pos = pos + 4; return nil
    elseif c:match("[-%dIN]") then return num()
    elseif c == "" then fail("unexpected end")
    else fail("unexpected '" .. c .. "'") end
  end
  local v = value(0)
  ws()
  if pos <= #s then fail("trailing characters") end
  return v
end


return M
