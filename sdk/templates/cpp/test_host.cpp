// The host's imports, natively, for unit tests: an in-memory state and a log on stderr.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

static std::map<std::string, std::string> state;

extern "C" void __wasm_import_tidewaterX3AprocessorX2FstateX400X2E1X2E0X00get(uint8_t* k, size_t kl, uint8_t* ret) {
  std::memset(ret, 0, 3 * sizeof(void*));
  auto it = state.find(std::string(reinterpret_cast<char*>(k), kl));
  if (it == state.end()) return;
  ret[0] = 1;
  auto* copy = static_cast<uint8_t*>(std::malloc(it->second.size() + 1));
  std::memcpy(copy, it->second.data(), it->second.size());
  *reinterpret_cast<uint8_t**>(ret + sizeof(void*)) = copy;
  *reinterpret_cast<size_t*>(ret + 2 * sizeof(void*)) = it->second.size();
}

extern "C" void __wasm_import_tidewaterX3AprocessorX2FstateX400X2E1X2E0X00set(uint8_t* k, size_t kl, uint8_t* v, size_t vl) {
  state[std::string(reinterpret_cast<char*>(k), kl)] = std::string(reinterpret_cast<char*>(v), vl);
}

extern "C" void __wasm_import_tidewaterX3AprocessorX2FstateX400X2E1X2E0X00delete(uint8_t* k, size_t kl) {
  state.erase(std::string(reinterpret_cast<char*>(k), kl));
}

extern "C" void __wasm_import_tidewaterX3AprocessorX2FlogX400X2E1X2E0X00log(int32_t level, uint8_t* m, size_t ml) {
  std::fprintf(stderr, "[%d] %.*s\n", level, static_cast<int>(ml), reinterpret_cast<const char*>(m));
}

// The component-type object is wasm-only; natively there is nothing to link.
extern "C" void __component_type_object_force_link_processor(void) {}
