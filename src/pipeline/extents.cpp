#include "pipeline/extents.hpp"

#include <ckpt/buffer.hpp>

#include <fcntl.h>

#include <algorithm>
#include <map>

namespace ckpt::pipeline {

namespace asio = boost::asio;

std::vector<selection> all_leaves(const format::index& ix) {
  std::vector<selection> out;
  out.reserve(ix.leaves.size());
  for (std::uint32_t i = 0; i < ix.leaves.size(); ++i)
    out.push_back({i});
  return out;
}

std::vector<extent> plan_extents(const format::index& ix, std::span<const selection> sels,
                                 const std::vector<bool>* readable,
                                 const std::function<bool(const chunk_ref&)>& alone) {
  struct ref {
    std::uint64_t offset, end;
    chunk_ref c;
    bool alone;
  };
  std::map<std::uint32_t, std::vector<ref>> by_file;
  std::vector<extent> zero;
  for (std::uint32_t si = 0; si < sels.size(); ++si) {
    const auto& le = ix.leaves[sels[si].leaf];
    const std::uint32_t end =
        std::min<std::uint32_t>(sels[si].end_chunk, static_cast<std::uint32_t>(le.chunks.size()));
    for (std::uint32_t ci = sels[si].first_chunk; ci < end; ++ci) {
      const auto& c = le.chunks[ci];
      const chunk_ref cr{si, ci};
      if (c.stored_size == 0) {  // all fill runs: an extent of nothing to read
        zero.push_back({c.file, 0, 0, {cr}});
        continue;
      }
      if (readable && !(*readable)[c.file]) continue;
      by_file[c.file].push_back({c.offset, c.offset + c.stored_size, cr, alone && alone(cr)});
    }
  }
  std::vector<extent> out;
  for (auto& [file, refs] : by_file) {
    std::sort(refs.begin(), refs.end(),
              [](const ref& a, const ref& b) { return a.offset < b.offset; });
    extent cur{file, 0, 0, {}};
    bool cur_alone = false;
    for (const auto& r : refs) {
      const std::uint64_t s = r.offset / io_align * io_align;
      const std::uint64_t e = align_up(r.end, io_align);
      if (!cur.chunks.empty() && !cur_alone && !r.alone && s <= cur.start + cur.length + max_gap &&
          e - cur.start <= max_extent) {
        cur.length = std::max(cur.length, e - cur.start);
      } else {
        if (!cur.chunks.empty()) out.push_back(std::move(cur));
        cur = extent{file, s, e - s, {}};
        cur_alone = r.alone;
      }
      cur.chunks.push_back(r.c);
    }
    if (!cur.chunks.empty()) out.push_back(std::move(cur));
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const extent& a, const extent& b) { return a.start < b.start; });
  out.insert(out.end(), std::make_move_iterator(zero.begin()), std::make_move_iterator(zero.end()));
  return out;
}

asio::awaitable<std::vector<io::file>> open_data_files(
    io::engine& io, const checkpoint::checkpoint_files& cf, const format::index& ix,
    const std::vector<bool>& needed, bool direct, bool stop_at_first, const file_problem& problem) {
  std::vector<io::file> files(ix.files.size());
  const int flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | (direct ? O_DIRECT : 0);
  for (std::uint32_t f = 0; f < ix.files.size(); ++f) {
    if (!needed.empty() && !needed[f]) continue;
    const auto& fe = ix.files[f];
    auto of = co_await io.open(cf.dir.fd, fe.name, flags);
    if (!of) {
      if (of.error() == std::errc::no_such_file_or_directory) {
        problem(f, make_error_code(errc::corrupt), "missing");
      } else {
        problem(f, of.error().code(), "cannot open: " + of.error().what());
      }
      if (stop_at_first) break;
      continue;
    }
    files[f] = of.value();
    auto st = co_await io.statx(of.value().fd, "", AT_EMPTY_PATH);
    if (!st) {
      problem(f, st.error().code(), "cannot stat: " + st.error().what());
      if (stop_at_first) break;
    } else if (st.value().stx_size < fe.size) {
      // (Longer is allowed: after a crash the file system may keep bytes past the synced size;
      // docs/FORMAT.md "Reader validation" 4.)
      problem(f, make_error_code(errc::corrupt),
              "is " + std::to_string(st.value().stx_size) + " bytes, the index says " +
                  std::to_string(fe.size) + " (truncated)");
      if (stop_at_first) break;
    }
  }
  co_return files;
}

asio::awaitable<void> close_files(io::engine& io, std::vector<io::file>& files) {
  for (auto& f : files) {
    if (f.fd >= 0) (void)co_await io.close(f);
    f.fd = -1;
  }
}

}  // namespace ckpt::pipeline
