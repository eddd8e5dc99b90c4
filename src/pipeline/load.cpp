// The load pipeline: validate everything (commit marker, index, template, data file sizes)
// before touching the caller's memory, then read aligned extents through the engine, verify
// each chunk's checksum and decode it straight into its destination on the CPU pool.
#include "checkpoint/files.hpp"
#include "format/codec.hpp"
#include "format/index.hpp"
#include "format/sharded.hpp"
#include "io/async.hpp"
#include "pipeline/load_ranges.hpp"
#include "pipeline/runtime_impl.hpp"

#include <ckpt/load.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/json/parse.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <unordered_map>

namespace ckpt {

namespace asio = boost::asio;

namespace {

// Destination memory for one leaf. A hostile index can claim any size: failing to allocate is an
// error, never an exception escaping the pipeline (found by the hostile-index tests).
result<ckpt::array> allocate_leaf(const format::leaf_entry& le) {
  try {
    return array::adopt(le.dtype, le.shape, aligned_buffer(le.num_bytes));
  } catch (const std::bad_alloc&) {
    return fail(errc::limit_exceeded, "leaf \"" + le.path + "\": cannot allocate " +
                                          std::to_string(le.num_bytes) + " bytes");
  }
}

constexpr std::size_t io_align = 4096;
constexpr std::uint64_t max_small_file = 1ull << 30;  // metadata.json / job.json cap
constexpr std::uint64_t max_extent = 8ull << 20;      // bytes read by one request
constexpr std::uint64_t max_gap = 256ull << 10;       // unneeded bytes read to merge requests

struct open_checkpoint {
  std::string where;  // the checkpoint path, for messages
  io::file dir;       // the checkpoint directory
  format::commit_marker commit;
  std::uint64_t commit_bytes = 0;  // the COMMIT file's size and checksum
  std::uint64_t commit_xxh3 = 0;
};

// Reads a whole small file (<= cap bytes) relative to dir_fd into a string with parse padding.
asio::awaitable<result<std::string>> read_small(io::engine& io, const open_checkpoint& ck,
                                                std::string_view name, std::uint64_t expect_size,
                                                bool check_size, std::uint64_t cap) {
  const std::string label = ck.where + "/" + std::string(name);
  auto f = co_await io.open(ck.dir.fd, std::string(name), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (!f) {
    if (f.error() == std::errc::no_such_file_or_directory) {
      co_return fail(errc::corrupt, label + " is missing");
    }
    co_return fail(std::move(f).error().with_context("open " + label));
  }
  auto st = co_await io.statx(f.value().fd, "", AT_EMPTY_PATH);
  std::string out;
  result<void> r = success();
  if (!st) {
    r = fail(std::move(st).error().with_context("stat " + label));
  } else {
    std::uint64_t size = st.value().stx_size;
    if (size > cap) {
      r = fail(errc::limit_exceeded, label + " is " + std::to_string(size) +
                                         " bytes, more than the cap of " + std::to_string(cap));
    } else if (check_size && size != expect_size) {
      r = fail(errc::corrupt, label + " is " + std::to_string(size) +
                                  " bytes, the commit marker says " + std::to_string(expect_size));
    } else {
      out.resize(size + format::parse_padding);
      auto n = co_await io.read(f.value(), std::as_writable_bytes(std::span(out.data(), size)), 0);
      if (!n) {
        r = fail(std::move(n).error().with_context("read " + label));
      } else if (n.value() != size) {
        r = fail(errc::corrupt, label + " shrank while being read");
      }
      out.resize(size);
    }
  }
  (void)co_await io.close(f.value());
  if (!r) co_return fail(r.error());
  co_return out;
}

// Parses text (size() bytes, with parse padding reserved behind it) as a JSON object.
result<boost::json::object> parse_object(const std::string& text, const std::string& label) {
  boost::json::error_code ec;
  auto v = boost::json::parse(text, ec);
  if (ec) return fail(errc::corrupt, label + ": not valid JSON (" + ec.message() + ")");
  if (!v.is_object()) return fail(errc::corrupt, label + ": not a JSON object");
  return std::move(v.as_object());
}

asio::awaitable<result<void>> check_sum(const std::string& text, std::uint64_t want,
                                        const std::string& label) {
  std::uint64_t got = format::checksum(std::as_bytes(std::span(text)));
  if (got != want) {
    co_return fail(errc::corrupt, label + ": checksum mismatch (commit marker says " +
                                      format::checksum_hex(want) + ", file has " +
                                      format::checksum_hex(got) + ")");
  }
  co_return success();
}

asio::awaitable<result<open_checkpoint>> open_dir(io::engine& io, const std::filesystem::path& p) {
  open_checkpoint ck;
  ck.where = p.string();
  auto d = co_await io.open(AT_FDCWD, ck.where, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (!d) {
    if (d.error() == std::errc::no_such_file_or_directory) {
      co_return fail(errc::not_found, "no checkpoint at " + ck.where);
    }
    co_return fail(std::move(d).error().with_context("open checkpoint " + ck.where));
  }
  ck.dir = d.value();
  auto text = co_await read_small(io, ck, format::commit_file, 0, false, 1 << 20);
  if (!text) {
    (void)co_await io.close(d.value());
    if (text.error() == errc::corrupt) {
      co_return fail(errc::not_committed,
                     ck.where + " is not a committed checkpoint (" + text.error().message() + ")");
    }
    co_return fail(text.error());
  }
  ck.commit_bytes = text.value().size();
  ck.commit_xxh3 = format::checksum(std::as_bytes(std::span(text.value())));
  text.value().reserve(text.value().size() + format::parse_padding);
  auto cm = format::parse_commit(text.value());
  if (!cm) {
    (void)co_await io.close(d.value());
    co_return fail(std::move(cm).error().with_context(ck.where + "/COMMIT"));
  }
  ck.commit = cm.value();
  co_return ck;
}

struct checkpoint_files {
  open_checkpoint ck;
  format::index ix;
  boost::json::object metadata;
  std::optional<boost::json::object> job;
};

asio::awaitable<result<std::string>> read_checked(io::engine& io, const open_checkpoint& ck,
                                                  std::string_view name, std::uint64_t bytes,
                                                  std::uint64_t xxh3, std::uint64_t cap) {
  CKPT_CO_TRY(std::string text, co_await read_small(io, ck, name, bytes, true, cap));
  CKPT_CO_TRY(co_await check_sum(text, xxh3, ck.where + "/" + std::string(name)));
  co_return text;
}

asio::awaitable<result<checkpoint_files>> open_all(io::engine& io, const std::filesystem::path& p,
                                                   bool with_index) {
  checkpoint_files cf;
  CKPT_CO_TRY(cf.ck, co_await open_dir(io, p));
  auto fail_close = [&](error e) -> asio::awaitable<result<checkpoint_files>> {
    (void)co_await io.close(cf.ck.dir);
    co_return fail(std::move(e));
  };
  const auto& cm = cf.ck.commit;
  auto meta = co_await read_checked(io, cf.ck, format::metadata_file, cm.metadata_bytes,
                                    cm.metadata_xxh3, max_small_file);
  if (!meta) co_return co_await fail_close(meta.error());
  auto mo = parse_object(meta.value(), cf.ck.where + "/metadata.json");
  if (!mo) co_return co_await fail_close(mo.error());
  cf.metadata = std::move(mo.value());
  if (cm.has_job) {
    auto job = co_await read_checked(io, cf.ck, format::job_file, cm.job_bytes, cm.job_xxh3,
                                     max_small_file);
    if (!job) co_return co_await fail_close(job.error());
    auto jo = parse_object(job.value(), cf.ck.where + "/job.json");
    if (!jo) co_return co_await fail_close(jo.error());
    cf.job = std::move(jo.value());
  }
  if (with_index) {
    format::parse_limits limits;
    auto text = co_await read_checked(io, cf.ck, format::index_file, cm.index_bytes, cm.index_xxh3,
                                      limits.max_index_bytes);
    if (!text) co_return co_await fail_close(text.error());
    text.value().reserve(text.value().size() + format::parse_padding);
    auto ix = format::parse_index(text.value(), limits);
    if (!ix) co_return co_await fail_close(std::move(ix).error().with_context(cf.ck.where));
    cf.ix = std::move(ix.value());
  }
  co_return cf;
}

// Where one leaf of the checkpoint goes: its chunks decoded into `dest`, or (ranged reads)
// chunks [first_chunk, end_chunk) handed to `sink`.
struct target {
  std::uint32_t leaf;
  std::span<std::byte> dest;
  std::uint32_t first_chunk = 0;
  std::uint32_t end_chunk = UINT32_MAX;
  const detail::range_read* sink = nullptr;
};

// Matches a template against the checkpoint. Fills `targets` and `result_leaves` (template
// path -> restored array) or reports every mismatch.
result<void> match_template(const format::index& ix, const tree& tmpl, bool partial,
                            std::vector<target>& targets,
                            std::unordered_map<std::string, ckpt::array>& restored,
                            const std::string& where) {
  std::unordered_map<std::string_view, std::uint32_t> by_path;
  by_path.reserve(ix.leaves.size());
  for (std::uint32_t i = 0; i < ix.leaves.size(); ++i)
    by_path.emplace(ix.leaves[i].path, i);
  std::vector<std::string> problems;
  std::vector<bool> used(ix.leaves.size(), false);
  for (auto& fl : tmpl.flatten()) {
    auto it = by_path.find(fl.path);
    if (it == by_path.end()) {
      if (!partial)
        problems.push_back("missing in checkpoint: \"" + fl.path + "\" (template " +
                           fl.array.describe() + ")");
      continue;
    }
    const auto& le = ix.leaves[it->second];
    if (le.dtype != fl.array.dtype() || le.shape != fl.array.shape()) {
      if (!partial) {
        problems.push_back("\"" + fl.path + "\": template " + fl.array.describe() +
                           ", checkpoint " + std::string(dtype_name(le.dtype)) +
                           shape_to_string(le.shape));
      }
      continue;
    }
    used[it->second] = true;
    ckpt::array dest = fl.array;
    if (!dest.is_writable() || dest.is_spec() || dest.num_bytes() == 0) {
      auto z = allocate_leaf(le);
      if (!z) return fail(z.error());
      dest = std::move(z.value());
    }
    targets.push_back({it->second, dest.mutable_bytes()});
    restored.emplace(fl.path, std::move(dest));
  }
  if (!partial) {
    for (std::uint32_t i = 0; i < ix.leaves.size(); ++i) {
      if (!used[i] && !std::any_of(problems.begin(), problems.end(), [&](const std::string& p) {
            return p.find("\"" + ix.leaves[i].path + "\":") == 0;
          })) {
        problems.push_back("not in template: \"" + ix.leaves[i].path + "\" (checkpoint " +
                           std::string(dtype_name(ix.leaves[i].dtype)) +
                           shape_to_string(ix.leaves[i].shape) + ")");
      }
    }
  }
  if (!problems.empty()) {
    std::string msg = where + ": the template does not match the checkpoint (" +
                      std::to_string(problems.size()) + " mismatch" +
                      (problems.size() == 1 ? "" : "es") + "):";
    for (const auto& p : problems)
      msg += "\n  " + p;
    return fail(errc::template_mismatch, std::move(msg));
  }
  return success();
}

// Rebuilds `tmpl` with the restored arrays; partial mode drops leaves that were skipped.
tree rebuild(const tree& tmpl, std::string& path,
             std::unordered_map<std::string, ckpt::array>& restored, bool& any) {
  switch (tmpl.type()) {
    case tree::kind::none:
      return tree();
    case tree::kind::leaf: {
      auto it = restored.find(path);
      if (it == restored.end()) return tree();
      any = true;
      return tree(std::move(it->second));
    }
    case tree::kind::dict: {
      tree out = tree::dict();
      for (const auto& [k, v] : tmpl.items()) {
        std::size_t mark = path.size();
        path = join_path(path, escape_key(k));
        bool child_any = false;
        tree c = rebuild(v, path, restored, child_any);
        path.resize(mark);
        if (child_any || v.is_none() || (v.size() == 0 && !v.is_leaf())) out.set(k, std::move(c));
        any = any || child_any;
      }
      return out;
    }
    case tree::kind::list: {
      tree out = tree::list();
      for (std::size_t i = 0; i < tmpl.elements().size(); ++i) {
        std::size_t mark = path.size();
        path = join_path(path, std::to_string(i));
        bool child_any = false;
        out.append(rebuild(tmpl.elements()[i], path, restored, child_any));
        path.resize(mark);
        any = any || child_any;
      }
      return out;
    }
  }
  return tree();
}

// One aligned read covering one or more chunks of one file.
struct extent {
  std::uint32_t file;
  std::uint64_t start;                                          // aligned
  std::uint64_t length;                                         // aligned
  std::vector<std::pair<std::uint32_t, std::uint32_t>> chunks;  // (target index, chunk index)
};

struct reader : std::enable_shared_from_this<reader> {
  std::shared_ptr<runtime> rt;
  const format::index* ix = nullptr;
  std::vector<target>* targets = nullptr;
  std::vector<io::file> files;
  std::vector<extent> extents;
  bool verify = true;
  std::string where;
  std::optional<error> failure;
  std::size_t left = 0;
  detail::result_event done;

  io::engine& io() { return rt->io(); }

  result<void> decode_extent(const extent& e, std::span<const std::byte> data) {
    for (const auto& tc : e.chunks) {
      // (not a structured binding: clang 14 cannot capture one in the lambda below)
      const std::uint32_t ti = tc.first, ci = tc.second;
      const target& t = (*targets)[ti];
      const auto& le = ix->leaves[t.leaf];
      const auto& c = le.chunks[ci];
      std::span<const std::byte> stored = data.subspan(c.offset - e.start, c.stored_size);
      auto where_chunk = [&] {
        return where + ": leaf \"" + le.path + "\" chunk " + std::to_string(ci) + " (" +
               ix->files[c.file].name + " at offset " + std::to_string(c.offset) + ")";
      };
      if (verify) {
        std::uint64_t got = format::checksum(stored);
        if (got != c.xxh3) {
          return fail(errc::corrupt, where_chunk() + ": checksum mismatch (index says " +
                                         format::checksum_hex(c.xxh3) + ", data has " +
                                         format::checksum_hex(got) + ")");
        }
      }
      std::uint64_t raw_off = 0;
      for (std::uint32_t k = 0; k < ci; ++k)
        raw_off += le.chunks[k].raw_size;
      if (t.sink) {
        if (c.codec == format::codec::raw) {
          t.sink->sink(raw_off, stored);
          continue;
        }
        thread_local std::vector<std::byte> scratch;
        try {
          if (scratch.size() < c.raw_size) scratch.resize(c.raw_size);
        } catch (const std::bad_alloc&) {
          return fail(errc::limit_exceeded,
                      where_chunk() + ": cannot allocate " + std::to_string(c.raw_size) + " bytes");
        }
        std::span<std::byte> raw(scratch.data(), c.raw_size);
        auto r = format::decode_chunk(c.codec, stored, dtype_size(le.dtype), raw);
        if (!r) return fail(std::move(r).error().with_context(where_chunk()));
        t.sink->sink(raw_off, raw);
        continue;
      }
      auto r = format::decode_chunk(c.codec, stored, dtype_size(le.dtype),
                                    t.dest.subspan(raw_off, c.raw_size));
      if (!r) return fail(std::move(r).error().with_context(where_chunk()));
    }
    return success();
  }

  asio::awaitable<void> read_one(std::size_t i) {
    auto self = shared_from_this();
    auto& rti = detail::access::internals(*rt);
    const extent& e = extents[i];
    aligned_buffer buf = rti.buffers.take(e.length);
    if (!failure) {
      auto n = co_await io().read(files[e.file], buf.span(), e.start);
      std::uint64_t need = 0;
      for (auto [ti, ci] : e.chunks) {
        const auto& c = ix->leaves[(*targets)[ti].leaf].chunks[ci];
        need = std::max(need, c.offset + c.stored_size - e.start);
      }
      if (!n) {
        if (!failure)
          failure =
              std::move(n).error().with_context("read " + where + "/" + ix->files[e.file].name);
      } else if (n.value() < need) {
        if (!failure) {
          failure =
              error(errc::corrupt, where + "/" + ix->files[e.file].name + " is truncated (read " +
                                       std::to_string(e.start + n.value()) + " bytes, needs " +
                                       std::to_string(e.start + need) + ")");
        }
      } else {
        std::optional<result<void>> r;
        co_await asio::co_spawn(rti.pool, decode_async(&r, i, buf.span()), asio::use_awaitable);
        if (r && !*r && !failure) failure = r->error();
      }
    }
    rti.buffers.give(std::move(buf));
    rti.staging.release(detail::buffer_pool::size_class(e.length));
    if (--left == 0) done.set(success());
  }

  asio::awaitable<void> decode_async(std::optional<result<void>>* out, std::size_t i,
                                     std::span<const std::byte> data) {
    out->emplace(decode_extent(extents[i], data));
    co_return;
  }

  asio::awaitable<result<void>> run() {
    auto self = shared_from_this();
    auto ex = co_await asio::this_coro::executor;
    auto& rti = detail::access::internals(*rt);
    left = extents.size();
    if (left == 0) co_return success();
    for (std::size_t i = 0; i < extents.size(); ++i) {
      if (failure) {
        left -= extents.size() - i;
        if (left == 0) done.set(success());
        break;
      }
      co_await rti.staging.acquire(detail::buffer_pool::size_class(extents[i].length));
      asio::co_spawn(ex, read_one(i), asio::detached);
    }
    co_await done.wait_async();
    if (failure) co_return fail(*failure);
    co_return success();
  }
};

void plan_extents(const format::index& ix, const std::vector<target>& targets,
                  std::vector<extent>& out) {
  struct ref {
    std::uint64_t offset, end;
    std::uint32_t ti, ci;
  };
  std::map<std::uint32_t, std::vector<ref>> by_file;
  for (std::uint32_t ti = 0; ti < targets.size(); ++ti) {
    const auto& le = ix.leaves[targets[ti].leaf];
    const std::uint32_t end = std::min<std::uint32_t>(targets[ti].end_chunk,
                                                      static_cast<std::uint32_t>(le.chunks.size()));
    for (std::uint32_t ci = targets[ti].first_chunk; ci < end; ++ci) {
      const auto& c = le.chunks[ci];
      by_file[c.file].push_back({c.offset, c.offset + c.stored_size, ti, ci});
    }
  }
  for (auto& [file, refs] : by_file) {
    std::sort(refs.begin(), refs.end(),
              [](const ref& a, const ref& b) { return a.offset < b.offset; });
    extent cur{file, 0, 0, {}};
    for (const auto& r : refs) {
      std::uint64_t s = r.offset / io_align * io_align;
      std::uint64_t e = align_up(r.end, io_align);
      if (!cur.chunks.empty() && s <= cur.start + cur.length + max_gap &&
          e - cur.start <= max_extent) {
        cur.length = std::max(cur.length, e - cur.start);
      } else {
        if (!cur.chunks.empty()) out.push_back(std::move(cur));
        cur = extent{file, s, e - s, {}};
      }
      cur.chunks.emplace_back(r.ti, r.ci);
    }
    if (!cur.chunks.empty()) out.push_back(std::move(cur));
  }
  // Interleave files so that reads proceed on all of them at once.
  std::stable_sort(out.begin(), out.end(),
                   [](const extent& a, const extent& b) { return a.start < b.start; });
}

// Reads the chunks of `targets` into their destinations.
asio::awaitable<result<void>> read_targets(std::shared_ptr<runtime> rt, const checkpoint_files& cf,
                                           std::vector<target>& targets, const load_options& opt) {
  auto& io = rt->io();
  auto rd = std::make_shared<reader>();
  rd->rt = rt;
  rd->ix = &cf.ix;
  rd->targets = &targets;
  rd->verify = opt.verify_checksums;
  rd->where = cf.ck.where;
  plan_extents(cf.ix, targets, rd->extents);
  // Open the data files needed and check their sizes before reading anything.
  std::vector<bool> needed(cf.ix.files.size(), false);
  for (const auto& e : rd->extents)
    needed[e.file] = true;
  rd->files.resize(cf.ix.files.size());
  result<void> status = success();
  for (std::size_t f = 0; f < cf.ix.files.size() && status; ++f) {
    if (!needed[f]) continue;
    const auto& fe = cf.ix.files[f];
    const std::string label = cf.ck.where + "/" + fe.name;
    auto of = co_await io.open(cf.ck.dir.fd, fe.name,
                               O_RDONLY | O_CLOEXEC | O_NOFOLLOW | (opt.direct_io ? O_DIRECT : 0));
    if (!of) {
      status = of.error() == std::errc::no_such_file_or_directory
                   ? result<void>(fail(errc::corrupt, label + " is missing"))
                   : result<void>(fail(std::move(of).error().with_context("open " + label)));
      break;
    }
    rd->files[f] = of.value();
    auto st = co_await io.statx(of.value().fd, "", AT_EMPTY_PATH);
    if (!st) {
      status = fail(std::move(st).error().with_context("stat " + label));
    } else if (st.value().stx_size != fe.size) {
      status = fail(errc::corrupt, label + " is " + std::to_string(st.value().stx_size) +
                                       " bytes, the index says " + std::to_string(fe.size) +
                                       (st.value().stx_size < fe.size ? " (truncated)" : ""));
    }
  }
  if (status) status = co_await rd->run();
  for (auto& f : rd->files) {
    if (f.fd >= 0) (void)co_await io.close(f);
  }
  co_return status;
}

// Every data file exists with the size the index records (checked before any destination
// memory is allocated: a claimed 1 TiB leaf over a small file costs nothing).
asio::awaitable<result<void>> check_data_files(io::engine& io, const checkpoint_files& cf) {
  for (const auto& fe : cf.ix.files) {
    auto st = co_await io.statx(cf.ck.dir.fd, fe.name, AT_SYMLINK_NOFOLLOW);
    const std::string label = cf.ck.where + "/" + fe.name;
    if (!st) {
      if (st.error() == std::errc::no_such_file_or_directory) {
        co_return fail(errc::corrupt, label + " is missing");
      }
      co_return fail(std::move(st).error().with_context("stat " + label));
    }
    if (st.value().stx_size != fe.size) {
      co_return fail(errc::corrupt, label + " is " + std::to_string(st.value().stx_size) +
                                        " bytes, the index says " + std::to_string(fe.size) +
                                        (st.value().stx_size < fe.size ? " (truncated)" : ""));
    }
  }
  co_return success();
}

// A failure to open `path` as an ordinary checkpoint, explained when it is a sharded one.
error explain_sharded(const std::filesystem::path& path, error e) {
  if (e != errc::not_committed && e != errc::corrupt) return e;
  auto cf = detail::read_checkpoint_files(path);
  if (!cf || !cf.value().sharded_commit) return e;
  return error(errc::invalid_argument,
               path.string() + " is a sharded checkpoint (" +
                   std::to_string(cf.value().sharded_commit->ranks) +
                   " ranks): load it with load_sharded or load_sharded_full (ckpt/shard.hpp)");
}

asio::awaitable<result<loaded_checkpoint>> load_impl(std::shared_ptr<runtime> rt,
                                                     std::filesystem::path path, const tree* tmpl,
                                                     std::string subtree, bool want_subtree,
                                                     load_options opt) {
  auto& io = rt->io();
  auto opened = co_await open_all(io, path, true);
  if (!opened) co_return fail(explain_sharded(path, std::move(opened).error()));
  checkpoint_files cf = std::move(opened).value();
  auto close_dir = [&]() -> asio::awaitable<void> { (void)co_await io.close(cf.ck.dir); };
  {
    auto sizes = co_await check_data_files(io, cf);
    if (!sizes) {
      co_await close_dir();
      co_return fail(std::move(sizes).error());
    }
  }
  std::vector<target> targets;
  std::unordered_map<std::string, ckpt::array> restored;
  tree shape_tree;  // what to rebuild from `restored`
  tree whole;       // or, for the whole checkpoint, the result built straight from the index
  result<void> m = success();
  // Leaf i of the checkpoint goes into a fresh buffer, returned under `key` in the result tree.
  auto add_allocated = [&](std::uint32_t i, const std::string& key) -> result<void> {
    auto z = allocate_leaf(cf.ix.leaves[i]);
    if (!z) return fail(z.error());
    targets.push_back({i, z.value().mutable_bytes()});
    restored.emplace(key, std::move(z.value()));
    return success();
  };
  if (want_subtree) {
    const tree structure = format::structure(cf.ix);
    auto node = structure.at(subtree);
    if (!node) {
      co_await close_dir();
      co_return fail(std::move(node).error().with_context(cf.ck.where));
    }
    // Only the subtree's leaves: their checkpoint paths carry the subtree's path as prefix.
    shape_tree = *node.value();
    std::unordered_map<std::string_view, std::uint32_t> by_path;
    for (std::uint32_t i = 0; i < cf.ix.leaves.size(); ++i)
      by_path.emplace(cf.ix.leaves[i].path, i);
    for (auto& fl : shape_tree.flatten()) {
      std::string full = fl.path.empty() ? subtree : join_path(subtree, fl.path);
      m = add_allocated(by_path.at(full), fl.path);
      if (!m) break;
    }
  } else if (tmpl) {
    shape_tree = *tmpl;
    m = match_template(cf.ix, *tmpl, opt.partial, targets, restored, cf.ck.where);
  } else {
    targets.reserve(cf.ix.leaves.size());
    auto t = format::build_tree(cf.ix, [&](std::size_t i) -> result<ckpt::array> {
      auto z = allocate_leaf(cf.ix.leaves[i]);
      if (z) targets.push_back({static_cast<std::uint32_t>(i), z.value().mutable_bytes()});
      return z;
    });
    if (t) {
      whole = std::move(t).value();
    } else {
      m = fail(std::move(t).error());
    }
  }
  if (m) m = co_await read_targets(rt, cf, targets, opt);
  co_await close_dir();
  if (!m) co_return fail(m.error());
  loaded_checkpoint out;
  std::string p;
  bool any = false;
  out.tree = want_subtree || tmpl ? rebuild(shape_tree, p, restored, any) : std::move(whole);
  out.metadata = std::move(cf.metadata);
  out.job = std::move(cf.job);
  co_return out;
}

}  // namespace

asio::awaitable<result<loaded_checkpoint>> load(std::filesystem::path path,
                                                const tree* template_tree, load_options options) {
  auto rt = runtime_or_global(options.runtime);
  co_return co_await detail::run_on(
      rt->executor(), load_impl(rt, std::move(path), template_tree, {}, false, options));
}

result<loaded_checkpoint> load_blocking(std::filesystem::path path, const tree* template_tree,
                                        load_options options) {
  auto rt = runtime_or_global(options.runtime);
  return detail::run_blocking(rt->executor(),
                              load_impl(rt, std::move(path), template_tree, {}, false, options));
}

asio::awaitable<result<tree>> load_subtree(std::filesystem::path path, std::string subtree_path,
                                           load_options options) {
  auto rt = runtime_or_global(options.runtime);
  CKPT_CO_TRY(auto lc, co_await detail::run_on(rt->executor(),
                                               load_impl(rt, std::move(path), nullptr,
                                                         std::move(subtree_path), true, options)));
  co_return std::move(lc.tree);
}

result<tree> load_subtree_blocking(std::filesystem::path path, std::string subtree_path,
                                   load_options options) {
  auto rt = runtime_or_global(options.runtime);
  CKPT_TRY(auto lc,
           detail::run_blocking(rt->executor(), load_impl(rt, std::move(path), nullptr,
                                                          std::move(subtree_path), true, options)));
  return std::move(lc.tree);
}

namespace {
// The small files of an ordinary checkpoint, or of a sharded one (metadata and job only; its
// COMMIT and sharded index checked, read synchronously: they are small).
asio::awaitable<result<checkpoint_files>> open_meta(std::shared_ptr<runtime> rt,
                                                    std::filesystem::path path, bool with_index) {
  auto& io = rt->io();
  auto opened = co_await open_all(io, path, with_index);
  if (!opened) {
    if (opened.error() != errc::not_committed && opened.error() != errc::corrupt) {
      co_return fail(std::move(opened).error());
    }
    auto sf = detail::read_checkpoint_files(path);
    if (!sf || !sf.value().sharded_commit) co_return fail(std::move(opened).error());
    if (!sf.value().committed()) co_return fail(detail::first_problem(path, sf.value()));
    checkpoint_files cf;
    cf.ck.where = path.string();
    cf.metadata = std::move(*sf.value().metadata);
    cf.job = std::move(sf.value().job);
    co_return cf;
  }
  checkpoint_files cf = std::move(opened).value();
  (void)co_await io.close(cf.ck.dir);
  co_return cf;
}

// A validated checkpoint and the targets of a set of ranged reads.
struct ranged_state {
  checkpoint_files cf;
  std::vector<target> targets;
};

}  // namespace

namespace detail {

struct ranged_checkpoint {
  ranged_state s;
};

asio::awaitable<result<std::shared_ptr<ranged_checkpoint>>> open_for_ranges(
    std::shared_ptr<runtime> rt, std::filesystem::path dir, std::optional<expected_commit> commit,
    const std::vector<range_read>& reads) {
  auto& io = rt->io();
  CKPT_CO_TRY(::ckpt::checkpoint_files cf, co_await open_all(io, dir, true));
  auto out = std::make_shared<ranged_checkpoint>();
  out->s.cf = std::move(cf);
  auto& c = out->s.cf;
  result<void> ok = co_await check_data_files(io, c);
  if (ok && commit && (commit->bytes != c.ck.commit_bytes || commit->xxh3 != c.ck.commit_xxh3)) {
    ok = fail(errc::corrupt, c.ck.where + "/COMMIT is " + std::to_string(c.ck.commit_bytes) +
                                 " bytes with checksum " + format::checksum_hex(c.ck.commit_xxh3) +
                                 ", the sharded index records " + std::to_string(commit->bytes) +
                                 " bytes with " + format::checksum_hex(commit->xxh3) +
                                 " (a rank directory from another save?)");
  }
  if (ok) {
    std::unordered_map<std::string_view, std::uint32_t> by_path;
    for (std::uint32_t i = 0; i < c.ix.leaves.size(); ++i)
      by_path.emplace(c.ix.leaves[i].path, i);
    for (const auto& rr : reads) {
      auto it = by_path.find(rr.leaf);
      if (it == by_path.end()) {
        ok = fail(errc::corrupt, c.ck.where + ": leaf \"" + rr.leaf +
                                     "\" is missing (the sharded index places a slice there)");
        break;
      }
      const auto& le = c.ix.leaves[it->second];
      if (le.dtype != rr.dtype || le.shape != rr.shape) {
        ok = fail(errc::corrupt, c.ck.where + ": leaf \"" + rr.leaf + "\" is " +
                                     std::string(dtype_name(le.dtype)) + shape_to_string(le.shape) +
                                     ", the sharded index says " +
                                     std::string(dtype_name(rr.dtype)) + shape_to_string(rr.shape));
        break;
      }
      if (rr.begin > rr.end || rr.end > le.num_bytes) {
        ok = fail(errc::invalid_argument, c.ck.where + ": leaf \"" + rr.leaf + "\": byte range " +
                                              std::to_string(rr.begin) + ".." +
                                              std::to_string(rr.end) + " is not inside it");
        break;
      }
      // The chunks whose raw range overlaps [begin, end).
      target t{it->second, {}, 0, 0, &rr};
      std::uint64_t pos = 0;
      std::uint32_t first = UINT32_MAX, end = 0;
      for (std::uint32_t ci = 0; ci < le.chunks.size(); ++ci) {
        const std::uint64_t next = pos + le.chunks[ci].raw_size;
        if (next > rr.begin && pos < rr.end) {
          if (first == UINT32_MAX) first = ci;
          end = ci + 1;
        }
        if (pos >= rr.end) break;
        pos = next;
      }
      if (first == UINT32_MAX) continue;  // an empty range
      t.first_chunk = first;
      t.end_chunk = end;
      out->s.targets.push_back(t);
    }
  }
  (void)co_await io.close(c.ck.dir);
  c.ck.dir.fd = -1;
  if (!ok) co_return fail(std::move(ok).error());
  co_return out;
}

asio::awaitable<result<void>> read_ranges(std::shared_ptr<runtime> rt,
                                          std::shared_ptr<ranged_checkpoint> ck,
                                          const std::vector<range_read>&, load_options options) {
  auto& io = rt->io();
  auto& c = ck->s.cf;
  // (Opened again: validation closed it so that many checkpoints can be validated at once.)
  auto d = co_await io.open(AT_FDCWD, c.ck.where, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (!d) co_return fail(std::move(d).error().with_context("open checkpoint " + c.ck.where));
  c.ck.dir = d.value();
  auto r = co_await read_targets(rt, c, ck->s.targets, options);
  (void)co_await io.close(c.ck.dir);
  c.ck.dir.fd = -1;
  co_return r;
}

}  // namespace detail

asio::awaitable<result<boost::json::object>> load_metadata(std::filesystem::path path,
                                                           std::shared_ptr<runtime> rt) {
  rt = runtime_or_global(rt);
  CKPT_CO_TRY(auto cf,
              co_await detail::run_on(rt->executor(), open_meta(rt, std::move(path), false)));
  co_return std::move(cf.metadata);
}

result<boost::json::object> load_metadata_blocking(std::filesystem::path path,
                                                   std::shared_ptr<runtime> rt) {
  rt = runtime_or_global(rt);
  CKPT_TRY(auto cf, detail::run_blocking(rt->executor(), open_meta(rt, std::move(path), false)));
  return std::move(cf.metadata);
}

result<boost::json::object> load_job_blocking(std::filesystem::path path,
                                              std::shared_ptr<runtime> rt) {
  rt = runtime_or_global(rt);
  CKPT_TRY(auto cf, detail::run_blocking(rt->executor(), open_meta(rt, path, false)));
  if (!cf.job) return fail(errc::not_found, path.string() + " has no job.json");
  return std::move(*cf.job);
}

result<bool> is_committed(std::filesystem::path path, std::shared_ptr<runtime> rt) {
  // (open_meta accepts sharded checkpoints too: their COMMIT and sharded index are checked.)
  rt = runtime_or_global(rt);
  auto cf = detail::run_blocking(rt->executor(), open_meta(rt, std::move(path), true));
  if (cf) return true;
  if (cf.error() == errc::not_found || cf.error() == errc::not_committed ||
      cf.error() == errc::corrupt || cf.error() == errc::unsupported_version ||
      cf.error() == std::errc::not_a_directory) {
    return false;
  }
  return fail(cf.error());
}

}  // namespace ckpt
