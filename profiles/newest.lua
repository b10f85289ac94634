-- The `max` newest entries of a product id -> ms table (the `bought` field).
local function newest(map, max)
  local ids = {}
  for id in pairs(map) do ids[#ids + 1] = id end
  if #ids <= max then return map end
  table.sort(ids, function(a, b) return map[a] > map[b] end)
  local kept = {}
  for k = 1, max do kept[ids[k]] = map[ids[k]] end
  return kept
end
