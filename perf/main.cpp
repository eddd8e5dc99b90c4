// ckpt-perf: benchmark harness. `ckpt-perf <command> [options]`; `ckpt-perf help` lists them.
#include "perf.hpp"

#include <cctype>
#include <cstdio>
#include <string>

namespace ckpt::perf {

std::map<std::string, command, std::less<>>& registry() {
  static std::map<std::string, command, std::less<>> commands;
  return commands;
}

std::optional<std::uint64_t> parse_bytes(std::string_view s) {
  std::uint64_t value = 0;
  std::size_t i = 0;
  for (; i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])); ++i) {
    if (value > (~std::uint64_t{0} - 9) / 10) return std::nullopt;
    value = value * 10 + static_cast<std::uint64_t>(s[i] - '0');
  }
  if (i == 0) return std::nullopt;
  std::string suffix;
  for (; i < s.size(); ++i)
    suffix += static_cast<char>(std::toupper(static_cast<unsigned char>(s[i])));
  if (suffix.empty() || suffix == "B") return value;
  static constexpr std::pair<const char*, int> units[] = {
      {"K", 10}, {"M", 20}, {"G", 30}, {"T", 40}};
  for (auto [unit, shift] : units) {
    if (suffix == unit || suffix == std::string(unit) + "IB" || suffix == std::string(unit) + "B") {
      if (value > (~std::uint64_t{0} >> shift)) return std::nullopt;
      return value << shift;
    }
  }
  return std::nullopt;
}

}  // namespace ckpt::perf

namespace {

int usage(std::FILE* out) {
  std::fprintf(out, "usage: ckpt-perf <command> [options]\n\ncommands:\n");
  for (const auto& [name, cmd] : ckpt::perf::registry()) {
    std::fprintf(out, "  %-8s %s\n", name.c_str(), cmd.help.c_str());
  }
  return out == stdout ? 0 : 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage(stderr);
  std::string_view name = argv[1];
  if (name == "help" || name == "--help" || name == "-h") return usage(stdout);
  auto& commands = ckpt::perf::registry();
  auto it = commands.find(name);
  if (it == commands.end()) {
    std::fprintf(stderr, "ckpt-perf: unknown command '%s'\n", argv[1]);
    return usage(stderr);
  }
  try {
    return it->second.fn(argc - 1, argv + 1);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ckpt-perf %s: %s\n", argv[1], e.what());
    return 1;
  }
}
