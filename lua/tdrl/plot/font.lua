-- An embedded bitmap font for plots: printable ASCII (32..126), our own glyph table.
-- Each glyph is 5 pixels wide and 9 rows tall: rows 1-7 hold capitals and digits (the cap
-- height), rows 8-9 hold descenders (g j p q y , ;). A glyph is written as 9 hex bytes, one
-- per row from the top; bit 4 (0x10) is the leftmost column. Characters advance 6 pixels
-- (5 + 1 spacing). Codepoints outside 32..126 draw as a hollow box.
--   font.draw(canvas, x, y, text, {color=, scale=, align="left"|"center"|"right",
--             valign="top"|"middle"|"bottom", rotate=90, bold=true})
--   font.width(text, scale), font.height(scale)   (box of the text: cap height, no descenders)
local font = {}

font.GLYPH_W, font.GLYPH_H, font.CAP_H, font.ADVANCE = 5, 9, 7, 6

local HEX = {
  "000000000000000000", --  32 space
  "040404040400040000", --  33 !
  "0A0A0A000000000000", --  34 "
  "0A0A1F0A1F0A0A0000", --  35 #
  "040F140E051E040000", --  36 $
  "181902040813030000", --  37 %
  "0C12140815120D0000", --  38 &
  "040408000000000000", --  39 '
  "020408080804020000", --  40 (
  "080402020204080000", --  41 )
  "0004150E1504000000", --  42 *
  "0004041F0404000000", --  43 +
  "00000000000C0C0408", --  44 ,
  "0000001F0000000000", --  45 -
  "00000000000C0C0000", --  46 .
  "000102040810000000", --  47 /
  "0E11131519110E0000", --  48 0
  "040C040404040E0000", --  49 1
  "0E11010204081F0000", --  50 2
  "1F02040201110E0000", --  51 3
  "02060A121F02020000", --  52 4
  "1F101E0101110E0000", --  53 5
  "0608101E11110E0000", --  54 6
  "1F0102040808080000", --  55 7
  "0E11110E11110E0000", --  56 8
  "0E11110F01020C0000", --  57 9
  "000C0C000C0C000000", --  58 :
  "000C0C000C0C040800", --  59 ;
  "020408100804020000", --  60 <
  "00001F001F00000000", --  61 =
  "080402010204080000", --  62 >
  "0E1101020400040000", --  63 ?
  "0E11010D15150E0000", --  64 @
  "0E11111F1111110000", --  65 A
  "1E11111E11111E0000", --  66 B
  "0E11101010110E0000", --  67 C
  "1C12111111121C0000", --  68 D
  "1F10101E10101F0000", --  69 E
  "1F10101E1010100000", --  70 F
  "0E11101711110F0000", --  71 G
  "1111111F1111110000", --  72 H
  "0E04040404040E0000", --  73 I
  "0702020202120C0000", --  74 J
  "111214181412110000", --  75 K
  "1010101010101F0000", --  76 L
  "111B15151111110000", --  77 M
  "111119151311110000", --  78 N
  "0E11111111110E0000", --  79 O
  "1E11111E1010100000", --  80 P
  "0E11111115120D0000", --  81 Q
  "1E11111E1412110000", --  82 R
  "0F10100E01011E0000", --  83 S
  "1F0404040404040000", --  84 T
  "1111111111110E0000", --  85 U
  "11111111110A040000", --  86 V
  "1111111515150A0000", --  87 W
  "11110A040A11110000", --  88 X
  "11110A040404040000", --  89 Y
  "1F01020408101F0000", --  90 Z
  "0E08080808080E0000", --  91 [
  "001008040201000000", --  92 \
  "0E02020202020E0000", --  93 ]
  "040A11000000000000", --  94 ^
  "000000000000001F00", --  95 _
  "080402000000000000", --  96 `
  "00000E010F110F0000", --  97 a
  "1010161911111E0000", --  98 b
  "00000E1010110E0000", --  99 c
  "01010D1311110F0000", -- 100 d
  "00000E111F100E0000", -- 101 e
  "0609081C0808080000", -- 102 f
  "00000F1111110F010E", -- 103 g
  "101016191111110000", -- 104 h
  "04000C0404040E0000", -- 105 i
  "02000602020202120C", -- 106 j
  "101012141814120000", -- 107 k
  "0C04040404040E0000", -- 108 l
  "00001A151511110000", -- 109 m
  "000016191111110000", -- 110 n
  "00000E1111110E0000", -- 111 o
  "00001E1111111E1010", -- 112 p
  "00000F1111110F0101", -- 113 q
  "000016191010100000", -- 114 r
  "00000F100E011E0000", -- 115 s
  "08081C080809060000", -- 116 t
  "0000111111130D0000", -- 117 u
  "00001111110A040000", -- 118 v
  "0000111115150A0000", -- 119 w
  "0000110A040A110000", -- 120 x
  "0000111111110F010E", -- 121 y
  "00001F0204081F0000", -- 122 z
  "060808100808060000", -- 123 {
  "040404040404040000", -- 124 |
  "0C02020102020C0000", -- 125 }
  "000008150200000000", -- 126 ~
}

-- Decoded glyphs: for each codepoint a flat list {col1, row1, col2, row2, ...} of lit pixels
-- (0-based column and row within the glyph).
local glyphs = {}
for i, h in ipairs(HEX) do
  local px = {}
  for row = 0, font.GLYPH_H - 1 do
    local bits = tonumber(h:sub(2 * row + 1, 2 * row + 2), 16)
    for col = 0, font.GLYPH_W - 1 do
      if bits & (0x10 >> col) ~= 0 then
        px[#px + 1] = col
        px[#px + 1] = row
      end
    end
  end
  glyphs[31 + i] = px
end
do -- the replacement glyph: a hollow box of cap height
  local px = {}
  for row = 0, 6 do
    for col = 0, 4 do
      if row == 0 or row == 6 or col == 0 or col == 4 then
        px[#px + 1] = col
        px[#px + 1] = row
      end
    end
  end
  glyphs.box = px
end

--- the lit pixels of one codepoint (a flat list of column, row pairs)
function font.glyph(cp)
  return glyphs[cp] or glyphs.box
end

local function codepoints(s)
  s = tostring(s)
  local ok, list = pcall(function()
    local t = {}
    for _, cp in utf8.codes(s) do t[#t + 1] = cp end
    return t
  end)
  if ok then return list end
  local t = {} -- not valid UTF-8: one glyph per byte
  for i = 1, #s do t[i] = s:byte(i) end
  return t
end

--- width in pixels of a single line of text at the given scale
function font.width(s, scale)
  scale = scale or 1
  local n = #codepoints(s)
  if n == 0 then return 0 end
  return (n * font.ADVANCE - 1) * scale
end

--- height of a line's box (cap height) at the given scale
function font.height(scale)
  return font.CAP_H * (scale or 1)
end

-- Draws text. (x, y) is the anchor; align/valign say which point of the text box it is.
-- rotate = 90 draws the text reading upwards (for a y-axis label); the anchor then refers
-- to the rotated box. Returns the width of the drawn text.
function font.draw(cv, x, y, s, opts)
  opts = opts or {}
  local scale = opts.scale or 1
  local color = opts.color or 0x000000
  local cps = codepoints(s)
  local w = font.width(s, scale)
  local h = font.height(scale)
  local rot = opts.rotate == 90
  local bw, bh = w, h -- box on screen
  if rot then bw, bh = h, w end
  local align, valign = opts.align or "left", opts.valign or "top"
  local left = x
  if align == "center" then left = x - bw // 2 elseif align == "right" then left = x - bw end
  local top = y
  if valign == "middle" then top = y - bh // 2 elseif valign == "bottom" then top = y - bh end
  left, top = math.floor(left), math.floor(top)
  local fill = cv.fill_rect
  local passes = opts.bold and 2 or 1
  for pass = 1, passes do
    local shift = pass - 1
    for i, cp in ipairs(cps) do
      local px = glyphs[cp] or glyphs.box
      local gx = (i - 1) * font.ADVANCE
      for k = 1, #px, 2 do
        local col, row = gx + px[k], px[k + 1]
        if rot then
          -- glyph column runs upwards from the bottom of the box, rows run rightwards
          fill(cv, left + row * scale, top + bh - (col + 1) * scale - shift, scale, scale, color)
        else
          fill(cv, left + col * scale + shift, top + row * scale, scale, scale, color)
        end
      end
    end
  end
  return w
end

return font
