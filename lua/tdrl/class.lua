-- A small class helper.
--
--   local class = require 'tdrl.class'
--   local Animal = class('Animal')
--   function Animal:__init(name) self.name = name end
--   local Dog = class('Dog', Animal)
--   function Dog:__init(name) Animal.__init(self, name); self.sound = 'woof' end
--   local d = Dog('rex')            -- instances are created by calling the class
--   class.isinstance(d, Animal)     --> true;  class.name(d) --> 'Dog'
--
-- A class is the metatable of its instances (`__index` is the class itself), so methods are
-- looked up along the parent chain. Metamethods (__call, __tostring, __len, __eq, arithmetic,
-- __close, ...) are inherited too: Lua looks them up raw in the metatable, so the helper copies a
-- parent's metamethods into the child when the child is created, and a metamethod defined on a
-- class later is pushed down to the subclasses that did not define their own.
-- A class may define __newindex as a function; instances then use it (tdrl.nn.Module registers
-- children and parameters assigned as fields that way). A function __index set on a class at
-- creation time is kept by its subclasses.
local class = {}

local METAMETHODS = {
  "__call", "__tostring", "__len", "__eq", "__lt", "__le", "__unm", "__add", "__sub", "__mul",
  "__div", "__mod", "__pow", "__idiv", "__band", "__bor", "__bxor", "__shl", "__shr", "__bnot",
  "__concat", "__close", "__gc", "__newindex", "__pairs",
}
local is_meta = {}
for _, k in ipairs(METAMETHODS) do is_meta[k] = true end

local registry = setmetatable({}, {__mode = "k"}) -- class -> {name=, parent=, children={}}

-- a subclass still holding the parent's old value (or none) of key gets the new one
local function push_down(cls, key, old, new)
  for child in pairs(registry[cls].children) do
    local cur = rawget(child, key)
    if cur == nil or cur == old then
      rawset(child, key, new)
      push_down(child, key, cur, new)
    end
  end
end

-- class(name [, parent]) -> a new class
local function new_class(_, name, parent)
  assert(type(name) == "string", "class: the first argument must be the class name (a string)")
  if parent ~= nil and not registry[parent] then
    error("class: the parent of '" .. name .. "' is not a class", 2)
  end
  local cls = {}
  local info = {name = name, parent = parent, children = setmetatable({}, {__mode = "k"})}
  registry[cls] = info
  cls.__index = cls
  cls.__name = name
  if parent then
    registry[parent].children[cls] = true
    for _, k in ipairs(METAMETHODS) do
      local v = rawget(parent, k)
      if v ~= nil then rawset(cls, k, v) end
    end
    -- a parent with a function __index keeps it (it is expected to fall back to the class)
    local pi = rawget(parent, "__index")
    if type(pi) == "function" then cls.__index = pi end
  end
  local meta = {
    __index = parent,
    __call = function(c, ...)
      local obj = setmetatable({}, c)
      local init = c.__init
      if init then init(obj, ...) end
      return obj
    end,
    __tostring = function(c) return "class " .. registry[c].name end,
    -- a metamethod first defined on a class after subclasses were made reaches the ones that
    -- do not define their own (define metamethods before subclassing to redefine them)
    __newindex = function(c, k, v)
      rawset(c, k, v)
      if is_meta[k] then push_down(c, k, nil, v) end
    end,
  }
  return setmetatable(cls, meta)
end

setmetatable(class, {__call = new_class})

--- true when v is a class made by this helper
function class.is_class(v) return registry[v] ~= nil end

--- the class of an instance (nil for other values)
function class.of(obj)
  if type(obj) ~= "table" then return nil end
  local mt = getmetatable(obj)
  return registry[mt] and mt or nil
end

--- the class name of an instance or a class ("table", "number", ... for other values)
function class.name(v)
  if registry[v] then return registry[v].name end
  local c = class.of(v)
  if c then return registry[c].name end
  return type(v)
end

--- the parent class of a class
function class.parent(cls) return registry[cls] and registry[cls].parent end

--- true when obj is an instance of cls or of a subclass of it
function class.isinstance(obj, cls)
  local c = class.of(obj)
  while c do
    if c == cls then return true end
    c = registry[c].parent
  end
  return false
end

return class
