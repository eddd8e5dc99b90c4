// ckpt-inspect consolidate SRC DST: a self-contained copy of checkpoint SRC at DST. A
// differential checkpoint hard-links its bases' data files (docs/FORMAT.md "Differential
// checkpoints"); its copy loads SRC whole (tree, metadata, job.json) and saves it again without a
// base, so DST holds every byte it uses in files of its own and links nothing. SRC's chunk size
// is kept (inferred from its chunks), so that DST can serve as the base of a later differential
// save as SRC could. The whole tree is held in memory while it is copied.
#include "common.hpp"

#include <ckpt/load.hpp>
#include <ckpt/save.hpp>

#include <sys/stat.h>

#include <algorithm>
#include <system_error>

namespace ckpt::inspect {

namespace {

namespace fs = std::filesystem;

struct consolidated {
  sharing src;  // how SRC's files were shared
  std::uint64_t leaves = 0, logical = 0, stored = 0, files = 0, chunk_bytes = 0;
};

// An error whose message names `p` (prepended when it does not already).
error naming(error e, const fs::path& p) {
  if (e.message().find(p.string()) == std::string::npos) e.add_context(p.string());
  return e;
}

// The chunk size SRC was saved with, as far as its chunks tell: a leaf of several chunks
// starts with a whole chunk (the chunk size rounded down to the element size; the largest
// such is exact for the smallest element size and gives the same chunks for every larger one,
// all sizes being powers of two). With no such leaf every leaf was one chunk: the default,
// or the largest leaf when that is larger.
std::uint64_t chunk_bytes_of(const format::index& ix) {
  std::uint64_t split = 0, largest = 0;
  for (const auto& le : ix.leaves) {
    largest = std::max(largest, le.num_bytes);
    if (le.chunks.size() > 1) split = std::max(split, le.chunks.front().raw_size);
  }
  if (split) return split;
  return std::max(save_options{}.chunk_bytes, largest);
}

// `p` absolute, symbolic links resolved as far as it exists, without a trailing separator.
fs::path resolved(const fs::path& p, std::error_code& ec) {
  fs::path r = fs::absolute(p, ec);
  if (ec) return {};
  r = fs::weakly_canonical(r, ec);
  if (!r.has_filename() && r.has_parent_path()) r = r.parent_path();
  return r;
}

result<consolidated> consolidate(const fs::path& src, const fs::path& dst) {
  std::error_code ec;
  const auto st = fs::symlink_status(dst, ec);
  if (ec && st.type() != fs::file_type::not_found) {
    return fail(system_error(ec.value(), dst.string()));
  }
  if (fs::exists(st)) {
    return fail(errc::already_exists,
                dst.string() +
                    " already exists; consolidate writes a new checkpoint and never "
                    "replaces one (remove it or choose another DST)");
  }
  auto cf = checkpoint::read_files_blocking(src);
  if (!cf) return fail(naming(std::move(cf).error(), src));
  if (cf.value().sharded()) {
    return fail(errc::invalid_argument,
                src.string() +
                    " is a sharded checkpoint; sharded checkpoints are never "
                    "differential (each rank's checkpoint holds its own files), so "
                    "there is nothing to consolidate");
  }
  if (!cf.value().committed()) return fail(naming(cf.value().first_problem(), src));
  const format::index& ix = *cf.value().index;
  // DST inside SRC would add a directory to SRC.
  std::error_code ec_s, ec_d;
  const fs::path src_abs = resolved(src, ec_s), dst_abs = resolved(dst, ec_d);
  if (!ec_s && !ec_d &&
      std::mismatch(src_abs.begin(), src_abs.end(), dst_abs.begin(), dst_abs.end()).first ==
          src_abs.end()) {
    return fail(errc::invalid_argument, dst.string() + " lies inside " + src.string());
  }

  consolidated out;
  out.src = sharing_of(src, ix);
  out.chunk_bytes = chunk_bytes_of(ix);

  auto loaded = load_blocking(src);
  if (!loaded) return fail(naming(std::move(loaded).error(), src));
  save_options o;
  o.chunk_bytes = out.chunk_bytes;
  o.job = std::move(loaded.value().job);
  // o.base stays empty: every chunk is written, nothing is linked.
  auto saved =
      save_blocking(dst, loaded.value().tree, std::move(loaded.value().metadata), std::move(o));
  if (!saved) return fail(naming(std::move(saved).error(), dst));
  out.leaves = saved.value().leaves;
  out.logical = saved.value().logical_bytes;
  out.stored = saved.value().stored_bytes;

  // What was written: DST's own index, which must link nothing.
  auto written = checkpoint::read_files_blocking(dst);
  if (!written) return fail(naming(std::move(written).error(), dst));
  if (!written.value().committed()) return fail(naming(written.value().first_problem(), dst));
  for (const auto& f : written.value().index->files) {
    if (!f.origin.empty()) {
      return fail(errc::corrupt, dst.string() + ": " + format::file_label(f) +
                                     " is a link to another checkpoint's file");
    }
  }
  out.files = written.value().index->files.size();
  return out;
}

}  // namespace

int consolidate_main(const args& a) {
  expect_positional(a, 2, "consolidate SRC DST");
  const fs::path src = a.positional[0], dst = a.positional[1];
  auto r = consolidate(src, dst);
  if (!r) {
    // ckpt's own errors say everything in their message; a system error's code adds its text
    // ("No space left on device").
    const error& e = r.error();
    throw tool_error(e.message().empty() || e.code().category() != error_category() ? e.what()
                                                                                    : e.message());
  }
  const auto& c = r.value();
  std::string from;
  for (const auto& g : c.src.shared)
    from += (from.empty() ? "shared " : ", ") + human_bytes(g.bytes) + " with " + g.origin;
  if (from.empty()) from = "shared nothing";
  std::printf(
      "%s -> %s: %llu leaves, logical %s, %llu data file%s written (%s), links nothing "
      "(%s %s)\n",
      src.string().c_str(), dst.string().c_str(), static_cast<unsigned long long>(c.leaves),
      human_bytes(c.logical).c_str(), static_cast<unsigned long long>(c.files),
      c.files == 1 ? "" : "s", human_bytes(c.stored).c_str(), src.string().c_str(), from.c_str());
  return exit_ok;
}

}  // namespace ckpt::inspect
