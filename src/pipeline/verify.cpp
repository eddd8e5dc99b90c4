// verify_checkpoint: the load pipeline's checks without the destinations. The small files are
// read by the one reader (checkpoint/files.hpp) collecting every problem; the data files are
// opened and planned as a load's (pipeline/extents.hpp) and streamed as aligned extents
// through the runtime's IO engine with a bounded number of bytes in flight, and each extent's
// chunks are checksummed and decoded into per-thread scratch memory on the CPU pool. Every
// problem is recorded; nothing stops at the first one.
#include "checkpoint/files.hpp"
#include "format/codec.hpp"
#include "format/index.hpp"
#include "io/async.hpp"
#include "pipeline/extents.hpp"
#include "pipeline/runtime_impl.hpp"

#include <ckpt/shard.hpp>
#include <ckpt/verify.hpp>

#include <fcntl.h>

#include <algorithm>
#include <mutex>
#include <unordered_map>

namespace ckpt {

namespace asio = boost::asio;

namespace {

using checkpoint::checkpoint_files;
using pipeline::chunk_ref;
using pipeline::extent;

// Streams every chunk of an ordinary checkpoint's readable data files, at most the budget in
// flight, checksums and decodes each on the CPU pool, and records every problem.
struct verifier : std::enable_shared_from_this<verifier> {
  std::shared_ptr<runtime> rt;
  std::shared_ptr<const checkpoint_files> cf;
  const format::index* ix = nullptr;  // cf's index
  std::vector<io::file> files;
  std::vector<extent> extents;
  std::function<void(const verify_progress&)> progress_cb;
  std::unique_ptr<detail::async_budget> in_flight;
  verify_progress progress;
  std::uint64_t bytes_read = 0;
  std::uint64_t chunks_ok = 0;
  std::mutex m;  // guards `problems` (appended from the CPU pool)
  std::vector<std::pair<std::uint64_t, verify_problem>> problems;  // (sort key, problem)

  io::engine& io() { return rt->io(); }

  // (chunk_ref::sel is the leaf: every leaf is selected, in order.)
  void add_problem(const chunk_ref& r, std::string message) {
    const auto& le = ix->leaves[r.sel];
    const auto& c = le.chunks[r.chunk];
    std::lock_guard l(m);
    problems.push_back(
        {c.offset, verify_problem{format::file_label(ix->files[c.file]), le.path, r.chunk,
                                  static_cast<std::int64_t>(c.offset), std::move(message)}});
  }

  // Checks the chunks of extent `i`, whose first `data.size()` bytes were read. Returns the
  // number of sound chunks. Runs on the CPU pool.
  std::uint64_t check_extent(std::size_t i, std::span<const std::byte> data) {
    thread_local std::vector<std::byte> scratch;
    const extent& e = extents[i];
    std::uint64_t ok = 0;
    for (const auto& r : e.chunks) {
      const auto& le = ix->leaves[r.sel];
      const auto& c = le.chunks[r.chunk];
      const std::uint64_t rel = c.offset - e.start;
      if (rel + c.stored_size > data.size()) {
        add_problem(r, "beyond the end of the file (file has " +
                           std::to_string(e.start + data.size()) + " bytes, chunk ends at " +
                           std::to_string(c.offset + c.stored_size) + ")");
        continue;
      }
      std::span<const std::byte> stored = data.subspan(rel, c.stored_size);
      std::uint64_t got = format::checksum(stored);
      if (got != c.xxh3) {
        add_problem(r, "checksum mismatch (index says " + format::checksum_hex(c.xxh3) +
                           ", data has " + format::checksum_hex(got) + ")");
        continue;
      }
      // A raw chunk decodes to its stored bytes (their size is checked by the index parser):
      // the checksum already proved it; skip the copy. Fill runs cannot fail to fill (the parser
      // checked them): only the stored rest is decoded.
      if (c.codec != format::codec::raw) {
        const std::uint64_t rest = c.raw_size - format::run_bytes(c.runs);
        if (scratch.size() < rest) scratch.resize(rest);
        auto d = format::decode_chunk(c.codec, stored, dtype_size(le.dtype),
                                      std::span(scratch.data(), rest));
        if (!d) {
          add_problem(r, "does not decode: " + d.error().message());
          continue;
        }
      }
      ++ok;
    }
    return ok;
  }

  asio::awaitable<std::uint64_t> check_on_pool(std::size_t i, std::span<const std::byte> data) {
    auto self = shared_from_this();
    co_return check_extent(i, data);
  }

  asio::awaitable<result<void>> read_one(std::size_t i) {
    auto self = shared_from_this();
    auto& rti = detail::access::internals(*rt);
    const extent& e = extents[i];
    if (e.length == 0) {  // fill runs only: nothing to read, the runs to check
      chunks_ok += co_await detail::run_on(rti.pool.get_executor(), check_on_pool(i, {}));
      progress.chunks_done += e.chunks.size();
      if (progress_cb) progress_cb(progress);
      co_return success();
    }
    aligned_buffer buf = rti.buffers.take_faulted(e.length);
    auto n = co_await io().read(files[e.file], buf.span(), e.start);
    if (!n) {
      const std::string msg = "read error: " + n.error().what();
      for (const auto& r : e.chunks)
        add_problem(r, msg);
    } else {
      bytes_read += n.value();
      auto data = std::span<const std::byte>(buf.data(), n.value());
      chunks_ok += co_await detail::run_on(rti.pool.get_executor(), check_on_pool(i, data));
    }
    rti.buffers.give(std::move(buf));
    progress.bytes_done += e.length;
    progress.chunks_done += e.chunks.size();
    if (progress_cb) progress_cb(progress);
    co_return success();  // (problems are recorded, never an error)
  }

  asio::awaitable<void> run() {
    auto self = shared_from_this();
    for (const auto& e : extents) {
      progress.bytes_total += e.length;
      progress.chunks_total += e.chunks.size();
    }
    if (progress_cb) progress_cb(progress);
    detail::task_group g(co_await asio::this_coro::executor);
    for (std::size_t i = 0; i < extents.size(); ++i) {
      const bool started = co_await g.spawn(read_one(i), in_flight.get(), extents[i].length);
      if (!started) break;
    }
    (void)co_await g.wait();
  }
};

asio::awaitable<result<verify_report>> verify_sharded_impl(std::shared_ptr<runtime> rt,
                                                           std::filesystem::path path,
                                                           checkpoint_files cf, verify_options opt);

asio::awaitable<verify_report> verify_files(std::shared_ptr<runtime> rt,
                                            std::shared_ptr<checkpoint_files> cf,
                                            verify_options opt);

asio::awaitable<result<verify_report>> verify_impl(std::shared_ptr<runtime> rt,
                                                   std::filesystem::path path, verify_options opt) {
  auto& io = rt->io();
  checkpoint::read_options ro;
  ro.keep_dir = true;
  CKPT_CO_TRY(checkpoint_files read, co_await checkpoint::read_files(io, path, ro));
  auto cf = std::make_shared<checkpoint_files>(std::move(read));
  if (cf->sharded() || !cf->index) {
    (void)co_await io.close(cf->dir);
    cf->dir.fd = -1;
  }
  if (cf->sharded()) {
    co_return co_await verify_sharded_impl(rt, std::move(path), std::move(*cf), std::move(opt));
  }
  co_return co_await verify_files(rt, std::move(cf), std::move(opt));
}

// An ordinary checkpoint whose small files `cf` holds (its directory open when it has an index;
// closed here).
asio::awaitable<verify_report> verify_files(std::shared_ptr<runtime> rt,
                                            std::shared_ptr<checkpoint_files> cf,
                                            verify_options opt) {
  auto& io = rt->io();
  verify_report rep;
  rep.problems = cf->problems;
  rep.committed = cf->committed();
  if (!cf->index) co_return rep;
  const format::index& ix = *cf->index;
  rep.files = ix.files.size();
  rep.leaves = ix.leaves.size();
  for (const auto& le : ix.leaves) {
    rep.chunks += le.chunks.size();
    rep.logical_bytes += le.num_bytes;
  }
  for (const auto& fe : ix.files)
    rep.stored_bytes += fe.size;

  auto v = std::make_shared<verifier>();
  v->rt = rt;
  v->cf = cf;
  v->ix = &ix;
  v->progress_cb = opt.progress;
  v->in_flight = std::make_unique<detail::async_budget>(
      std::max<std::uint64_t>(opt.max_in_flight_bytes, pipeline::max_extent));
  v->files = co_await pipeline::open_data_files(
      io, *cf, ix, {}, opt.direct_io, false,
      [&](std::uint32_t f, std::error_code, std::string msg) {
        rep.problems.push_back({format::file_label(ix.files[f]), {}, -1, -1, std::move(msg)});
      });
  (void)co_await io.close(cf->dir);
  cf->dir.fd = -1;
  std::vector<bool> readable(ix.files.size(), false);
  for (std::size_t f = 0; f < ix.files.size(); ++f)
    readable[f] = v->files[f].fd >= 0;
  // Chunks of files that could not be opened: each one is unreadable.
  for (std::uint32_t li = 0; li < ix.leaves.size(); ++li) {
    const auto& le = ix.leaves[li];
    for (std::uint32_t ci = 0; ci < le.chunks.size(); ++ci) {
      if (!readable[le.chunks[ci].file]) {
        v->add_problem({li, ci}, "unreadable: " + format::file_label(ix.files[le.chunks[ci].file]) +
                                     " cannot be opened");
      }
    }
  }
  const auto sels = pipeline::all_leaves(ix);
  v->extents = pipeline::plan_extents(ix, sels, &readable);
  co_await v->run();
  co_await pipeline::close_files(io, v->files);
  // Chunk problems sorted by file and offset, so that reports are deterministic.
  std::stable_sort(v->problems.begin(), v->problems.end(), [](const auto& a, const auto& b) {
    return std::tie(a.second.file, a.first) < std::tie(b.second.file, b.first);
  });
  for (auto& [key, p] : v->problems)
    rep.problems.push_back(std::move(p));
  rep.chunks_checked = v->chunks_ok;
  rep.bytes_read = v->bytes_read;
  co_return rep;
}

// A sharded checkpoint: its own files (already read into `cf`), then every rank's checkpoint
// in full, each rank's COMMIT against the sharded index and every slice against its rank's index.
asio::awaitable<result<verify_report>> verify_sharded_impl(std::shared_ptr<runtime> rt,
                                                           std::filesystem::path path,
                                                           checkpoint_files cf,
                                                           verify_options opt) {
  auto& io = rt->io();
  verify_report rep;
  rep.problems = std::move(cf.problems);
  rep.committed = cf.committed();
  if (!cf.sharded_index) co_return rep;
  const format::sharded_index& six = *cf.sharded_index;
  rep.leaves = six.leaves.size();
  for (const auto& le : six.leaves)
    rep.logical_bytes += le.num_bytes;
  for (std::uint32_t r = 0; r < six.ranks.size(); ++r) {
    const auto& re = six.ranks[r];
    const std::filesystem::path dir = path / re.dir;
    auto problem = [&](std::string file, std::string leaf, std::string msg) {
      rep.problems.push_back(
          {re.dir + (file.empty() ? "" : "/" + file), std::move(leaf), -1, -1, std::move(msg)});
      rep.committed = false;
    };
    // The rank's small files, read once: its COMMIT against the sharded index, then the rank
    // checkpoint in full, then its index against the slices.
    checkpoint::read_options ro;
    ro.keep_dir = true;
    auto read = co_await checkpoint::read_files(io, dir, ro);
    if (!read) {
      problem("", "",
              read.error() == errc::not_found ? std::string("missing") : read.error().what());
      continue;
    }
    auto rcf = std::make_shared<checkpoint_files>(std::move(read).value());
    if (rcf->commit_bytes != 0 || rcf->commit_xxh3 != 0) {  // (COMMIT was read)
      if (rcf->commit_bytes != re.commit_bytes || rcf->commit_xxh3 != re.commit_xxh3) {
        problem("COMMIT", "",
                "is " + std::to_string(rcf->commit_bytes) + " bytes with checksum " +
                    format::checksum_hex(rcf->commit_xxh3) + ", the sharded index records " +
                    std::to_string(re.commit_bytes) + " bytes with " +
                    format::checksum_hex(re.commit_xxh3));
      }
    }
    if (!rcf->index) {
      (void)co_await io.close(rcf->dir);
      rcf->dir.fd = -1;
    }
    auto sub = co_await verify_files(rt, rcf, opt);
    auto& s = sub;
    rep.committed = rep.committed && s.committed;
    rep.files += s.files;
    rep.chunks += s.chunks;
    rep.chunks_checked += s.chunks_checked;
    rep.stored_bytes += s.stored_bytes;
    rep.bytes_read += s.bytes_read;
    for (auto& p : s.problems) {
      p.file = re.dir + "/" + p.file;
      rep.problems.push_back(std::move(p));
    }
    // Every slice this rank holds is a leaf of its index with the slice's dtype and shape.
    if (!rcf->index) continue;  // (reported by the rank's own verification)
    std::unordered_map<std::string_view, const format::leaf_entry*> by_path;
    for (const auto& le : rcf->index->leaves)
      by_path.emplace(le.path, &le);
    for (const auto& gl : six.leaves) {
      for (const auto& sl : gl.slices) {
        if (sl.rank != r) continue;
        auto it = by_path.find(sl.leaf);
        if (it == by_path.end()) {
          problem(std::string(format::index_file), gl.path,
                  "slice " + format::box_to_string(sl.where) + " (leaf \"" + sl.leaf +
                      "\") is missing");
        } else if (it->second->dtype != gl.dtype || it->second->shape != sl.where.extent) {
          problem(std::string(format::index_file), gl.path,
                  "slice " + format::box_to_string(sl.where) + " (leaf \"" + sl.leaf + "\") is " +
                      std::string(dtype_name(it->second->dtype)) +
                      shape_to_string(it->second->shape) + ", expected " +
                      std::string(dtype_name(gl.dtype)) + shape_to_string(sl.where.extent));
        }
      }
    }
  }
  co_return rep;
}

}  // namespace

asio::awaitable<result<verify_report>> verify_checkpoint(std::filesystem::path path,
                                                         verify_options options) {
  auto rt = runtime_or_global(options.runtime);
  co_return co_await detail::run_on(rt->executor(),
                                    verify_impl(rt, std::move(path), std::move(options)));
}

result<verify_report> verify_checkpoint_blocking(std::filesystem::path path,
                                                 verify_options options) {
  auto rt = runtime_or_global(options.runtime);
  return detail::run_blocking(rt->executor(), verify_impl(rt, std::move(path), std::move(options)));
}

}  // namespace ckpt
