-- The layering rules of docs/architecture.md, checked on the sources and the built objects:
-- no circle of #include among vm/ files or among the conv files, no circle of calls between
-- their object files (file A uses a symbol that B defines and B one of A's), and no circle of
-- require among the Lua modules. A circle found is printed as "a -> b -> a".
local BUILD = os.getenv("BUILD") or "build"

local function lines_of(cmd)
  local p = assert(io.popen(cmd))
  local out = {}
  for l in p:lines() do out[#out + 1] = l end
  p:close()
  return out
end

local function read(path)
  local f = assert(io.open(path))
  local s = f:read("a")
  f:close()
  return s
end

-- graph: node -> {node = true or why}. Returns the circles as "a -> b -> a" strings (one per
-- strongly connected component of more than one node, or a node with an edge to itself), each
-- followed by its edges and why they exist.
local function circles(graph)
  local index, low, on, stack, out, n = {}, {}, {}, {}, {}, 0
  local function visit(v)
    n = n + 1; index[v], low[v] = n, n
    stack[#stack + 1] = v; on[v] = true
    for w in pairs(graph[v] or {}) do
      if not index[w] then visit(w); low[v] = math.min(low[v], low[w])
      elseif on[w] then low[v] = math.min(low[v], index[w]) end
    end
    if low[v] == index[v] then
      local comp = {}
      repeat
        local w = table.remove(stack); on[w] = nil; comp[#comp + 1] = w
      until w == v
      if #comp > 1 or (graph[v] or {})[v] then
        table.sort(comp)
        local inside, why = {}, {}
        for _, a in ipairs(comp) do inside[a] = true end
        for _, a in ipairs(comp) do
          for b, label in pairs(graph[a] or {}) do
            if inside[b] then why[#why + 1] = "  " .. a .. " -> " .. b .. (type(label) == "string" and " (" .. label .. ")" or "") end
          end
        end
        table.sort(why)
        out[#out + 1] = table.concat(comp, " -> ") .. " -> " .. comp[1] .. "\n" .. table.concat(why, "\n")
      end
    end
  end
  local nodes = {}
  for v in pairs(graph) do nodes[#nodes + 1] = v end
  table.sort(nodes)
  for _, v in ipairs(nodes) do if not index[v] then visit(v) end end
  return out
end

local function no_circles(graph, what)
  local c = circles(graph)
  if #c > 0 then error(what .. " circles:\n" .. table.concat(c, "\n"), 2) end
end

-- #include "x" edges among the given files (paths relative to the repository root).
local function include_graph(files)
  local g = {}
  for _, f in ipairs(files) do
    g[f] = g[f] or {}
    local dir = f:match("^(.*)/") or "."
    for inc in read(f):gmatch('#%s*include%s*"([^"]+)"') do
      local target = (dir .. "/" .. inc):gsub("/[^/]+/%.%./", "/")
      g[f][target] = true
    end
  end
  return g
end

-- Call edges between object files: A -> B when A's undefined symbols include one B defines.
local function call_graph(objs)
  local defs, uses = {}, {}
  for _, o in ipairs(objs) do
    uses[o] = {}
    for _, l in ipairs(lines_of("nm " .. o)) do
      local kind, sym = l:match("^%s*%x*%s+(%a)%s+(%S+)$")
      if kind == "U" then uses[o][sym] = true
      elseif kind and kind:match("[TDBRVW]") then defs[sym] = o end
    end
  end
  local g = {}
  for o, syms in pairs(uses) do
    g[o] = {}
    for s in pairs(syms) do
      if defs[s] and defs[s] ~= o then g[o][defs[s]] = s end
    end
  end
  return g
end

local function ls(pattern)
  return lines_of("ls " .. pattern .. " 2>/dev/null")
end

local function objs_of(sources)
  local out = {}
  for _, s in ipairs(sources) do
    local o = BUILD .. "/" .. s:gsub("%.c$", ".o")
    local f = io.open(o)
    if not f then error("no object " .. o .. ": build first (make all)") end
    f:close()
    out[#out + 1] = o
  end
  return out
end

describe("layers", function()
  it("finds a circle it is shown (the checker itself)", function()
    spec.eq(#circles({a = {b = true}, b = {c = true}, c = {a = true}, d = {a = true}}), 1)
    spec.eq(circles({a = {b = true}, b = {a = true}})[1], "a -> b -> a\n  a -> b\n  b -> a")
    spec.eq(#circles({a = {b = true}, b = {c = true}}), 0)
  end)

  it("vm/ files include each other without circles", function()
    local files = ls("vm/*.c vm/*.h")
    spec.truthy(#files > 10, "vm/ sources found")
    no_circles(include_graph(files), "include")
  end)

  it("vm/ object files call each other without circles", function()
    no_circles(call_graph(objs_of(ls("vm/*.c"))), "call")
  end)

  it("the conv files include and call each other without circles", function()
    local src = ls("ops/conv*.c")
    spec.truthy(#src >= 2, "conv sources found")
    no_circles(include_graph(ls("ops/conv*.c ops/conv*.h ops/winograd*.h")), "include")
    no_circles(call_graph(objs_of(src)), "call")
  end)

  it("no Lua module requires one that requires it back", function()
    local g = {}
    for _, f in ipairs(lines_of("cd lua && find tdrl -name '*.lua' | sort")) do
      local mod = f:gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
      g[mod] = g[mod] or {}
      local text = read("lua/" .. f):gsub("%-%-[^\n]*", "")
      for q, name in text:gmatch("require%s*%(?%s*(['\"])(tdrl[%w_.]*)%1") do
        if name ~= mod then g[mod][name] = "require" end
      end
    end
    spec.truthy(g["tdrl"] and g["tdrl.nn"], "modules found")
    no_circles(g, "require")
  end)
end)
