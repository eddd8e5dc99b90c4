#include "store_paths.hpp"

#include <fcntl.h>

#include <vector>

namespace ckpt::detail {

std::string temp_name(std::string_view name, std::string_view suffix) {
  return "." + std::string(name) + ".tmp-" + std::string(suffix);
}

std::string trash_name(std::string_view name, std::string_view suffix) {
  return "." + std::string(name) + ".trash-" + std::string(suffix);
}

bool is_temp_or_trash(std::string_view name) {
  if (name.size() < 2 || name[0] != '.') return false;
  return name.find(".tmp-", 1) != std::string_view::npos ||
         name.find(".trash-", 1) != std::string_view::npos;
}

boost::asio::awaitable<result<void>> make_directories(io::engine& io, std::filesystem::path dir) {
  std::vector<std::filesystem::path> missing;
  for (auto p = dir; !p.empty(); p = p.parent_path()) {
    auto st = co_await io.statx(AT_FDCWD, p.string());
    if (st) {
      if (!S_ISDIR(st.value().stx_mode)) {
        co_return fail(system_error(ENOTDIR, p.string() + " is not a directory"));
      }
      break;
    }
    if (st.error() != std::errc::no_such_file_or_directory) co_return fail(st.error());
    missing.push_back(p);
    if (p == p.parent_path()) break;
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    auto made = co_await io.mkdir(AT_FDCWD, it->string(), 0755);
    if (!made && made.error() != std::errc::file_exists) {
      co_return fail(std::move(made).error().with_context("create directory " + it->string()));
    }
    CKPT_CO_TRY(io::file parent, co_await io.open(AT_FDCWD, it->parent_path().string(),
                                                  O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    auto s = co_await io.fsync(parent);
    (void)co_await io.close(parent);
    if (!s)
      co_return fail(std::move(s).error().with_context("fsync " + it->parent_path().string()));
  }
  co_return success();
}

}  // namespace ckpt::detail
