/* Readable text for a value shown at the REPL or as a cell's result: a table prints its
 * contents (nested, sorted, cut at 50 entries and 4 levels, cycles marked), as trepl did, not
 * "table: 0x...". A list of plain values fits on one line when it can ({8, 32, 32, 16}); other
 * tables print one entry a line. A value with __tostring (a tensor, a module) keeps its own
 * text; nested in a table it shows its first line, or a tensor its footer. The formatter is Lua,
 * kept as a string so that it works whatever package.path holds. */
#include <lauxlib.h>
#include <lua.h>

#include "host.h"

static const char pretty_lua[] =
    "local MAX_ITEMS, MAX_DEPTH, WIDTH = 50, 4, 78\n"
    "local fmt, concat = string.format, table.concat\n"
    "local KEYWORDS = {}\n"
    "for w in ('and break do else elseif end false for function goto if in local nil not or repeat return then '\n"
    "  .. 'true until while'):gmatch('%a+') do KEYWORDS[w] = true end\n"
    "\n"
    "local function own_text(v)\n"
    "  local mt = getmetatable(v)\n"
    "  return type(mt) == 'table' and mt.__tostring ~= nil\n"
    "end\n"
    "\n"
    "-- one line for a value inside a table; nil for a table that needs the full form\n"
    "local function short(v)\n"
    "  local t = type(v)\n"
    "  if t == 'string' then\n"
    "    local s = fmt('%q', v):gsub('\\\\\\n', '\\\\n')\n"
    "    if #s > 60 then s = s:sub(1, 56) .. '...\"' end\n"
    "    return s\n"
    "  end\n"
    "  if t == 'table' and not own_text(v) then return nil end\n"
    "  local s = tostring(v)\n"
    "  if s:find('\\n', 1, true) then\n"
    "    local last = s:match('[^\\n]*$')\n"
    "    if last:match('^%[.*%]$') then return last end -- a tensor's footer\n"
    "    return s:match('^[^\\n]*') .. ' ...'\n"
    "  end\n"
    "  return s\n"
    "end\n"
    "\n"
    "local function key_text(k)\n"
    "  if type(k) == 'string' and k:match('^[%a_][%w_]*$') and not KEYWORDS[k] then return k end\n"
    "  return '[' .. (short(k) or tostring(k)) .. ']'\n"
    "end\n"
    "\n"
    "-- the list part 1..n first, then the other keys sorted by their text\n"
    "local function keys_of(t)\n"
    "  local n = 0\n"
    "  while rawget(t, n + 1) ~= nil do n = n + 1 end\n"
    "  local rest = {}\n"
    "  for k in next, t do\n"
    "    if not (math.type(k) == 'integer' and k >= 1 and k <= n) then rest[#rest + 1] = k end\n"
    "  end\n"
    "  table.sort(rest, function(a, b)\n"
    "    local ta, tb = type(a), type(b)\n"
    "    if ta ~= tb then return ta < tb end\n"
    "    if ta == 'number' or ta == 'string' then return a < b end\n"
    "    return tostring(a) < tostring(b)\n"
    "  end)\n"
    "  local keys = {}\n"
    "  for i = 1, n do keys[i] = i end\n"
    "  for _, k in ipairs(rest) do keys[#keys + 1] = k end\n"
    "  return keys, n\n"
    "end\n"
    "\n"
    "local format_table\n"
    "\n"
    "function format_table(t, indent, depth, seen)\n"
    "  if seen[t] then return '<cycle>' end\n"
    "  local keys, n = keys_of(t)\n"
    "  if #keys == 0 then return '{}' end\n"
    "  if depth > MAX_DEPTH then return '{...}' end\n"
    "  seen[t] = true\n"
    "  local parts, flat = {}, true\n"
    "  for i, k in ipairs(keys) do\n"
    "    if i > MAX_ITEMS then break end\n"
    "    local s = short(rawget(t, k))\n"
    "    if s == nil then flat = false break end\n"
    "    parts[i] = (i <= n) and s or (key_text(k) .. ' = ' .. s)\n"
    "  end\n"
    "  local more = #keys > MAX_ITEMS and fmt('... (%d more)', #keys - MAX_ITEMS) or nil\n"
    "  local out\n"
    "  if flat then\n"
    "    if more then parts[#parts + 1] = more end\n"
    "    local line = '{' .. concat(parts, ', ') .. '}'\n"
    "    if #indent + #line <= WIDTH then\n"
    "      out = line\n"
    "    else -- plain values packed into lines of the width\n"
    "      local lines, cur = {'{'}, indent .. ' '\n"
    "      for i, p in ipairs(parts) do\n"
    "        local item = ' ' .. p .. (i < #parts and ',' or '')\n"
    "        if #cur + #item > WIDTH and cur ~= indent .. ' ' then lines[#lines + 1] = cur cur = indent .. ' ' end\n"
    "        cur = cur .. item\n"
    "      end\n"
    "      lines[#lines + 1] = cur\n"
    "      lines[#lines + 1] = indent .. '}'\n"
    "      out = concat(lines, '\\n')\n"
    "    end\n"
    "  else\n"
    "    local lines = {'{'}\n"
    "    for i, k in ipairs(keys) do\n"
    "      if i > MAX_ITEMS then break end\n"
    "      local v = rawget(t, k)\n"
    "      local s = short(v) or format_table(v, indent .. '  ', depth + 1, seen)\n"
    "      lines[#lines + 1] = indent .. '  ' .. (i <= n and '' or (key_text(k) .. ' = ')) .. s .. ','\n"
    "    end\n"
    "    if more then lines[#lines + 1] = indent .. '  ' .. more end\n"
    "    lines[#lines + 1] = indent .. '}'\n"
    "    out = concat(lines, '\\n')\n"
    "  end\n"
    "  seen[t] = nil\n"
    "  return out\n"
    "end\n"
    "\n"
    "return function(v)\n"
    "  if type(v) == 'table' and not own_text(v) then return format_table(v, '', 1, {}) end\n"
    "  return tostring(v)\n"
    "end\n";

static const char registry_key[] = "tdrl.pretty";

/* pretty(v) -> string */
int host_l_pretty(lua_State *L) {
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    if (lua_getfield(L, LUA_REGISTRYINDEX, registry_key) != LUA_TFUNCTION) {
        lua_pop(L, 1);
        if (luaL_loadbuffer(L, pretty_lua, sizeof pretty_lua - 1, "=tdrl.pretty") != LUA_OK) return lua_error(L);
        lua_call(L, 0, 1);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, registry_key);
    }
    lua_insert(L, 1);
    lua_call(L, 1, 1);
    return 1;
}
