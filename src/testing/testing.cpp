// Test-only hooks; see testing.hpp. Empty unless CKPT_TESTING is defined.
#include "testing/testing.hpp"

#ifdef CKPT_TESTING

#include <unistd.h>
#include <csignal>
#include <cstdlib>
#include <map>
#include <mutex>

namespace ckpt::testing {

namespace {
std::mutex kill_mutex;
std::map<std::string, long, std::less<>> kill_hits;
}  // namespace

bool planted(std::string_view bug) noexcept {
  const char* env = std::getenv("CKPT_TEST_PLANT_BUG");
  if (env == nullptr) return false;
  std::string_view list(env);
  while (!list.empty()) {
    const auto comma = list.find(',');
    if (list.substr(0, comma) == bug) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

void kill_point(std::string_view name) noexcept {
  const char* env = std::getenv("CKPT_KILL_POINT");
  if (env == nullptr) return;
  std::string_view spec(env);
  long nth = 1;
  if (const auto colon = spec.find(':'); colon != std::string_view::npos) {
    nth = std::strtol(std::string(spec.substr(colon + 1)).c_str(), nullptr, 10);
    spec = spec.substr(0, colon);
  }
  if (spec != name) return;
  long hit = 0;
  {
    std::lock_guard l(kill_mutex);
    hit = ++kill_hits[std::string(name)];
  }
  if (hit == nth) ::kill(::getpid(), SIGKILL);
}

}  // namespace ckpt::testing

#endif  // CKPT_TESTING
