// The load pipeline: validate everything (commit marker, index, template, data file sizes)
// before touching the caller's memory, then read aligned extents through the engine, verify
// each chunk's checksum and decode it straight into its destination on the CPU pool.
#include "checkpoint/files.hpp"
#include "format/codec.hpp"
#include "format/index.hpp"
#include "format/sharded.hpp"
#include "io/async.hpp"
#include "model/tree_walk.hpp"
#include "pipeline/extents.hpp"
#include "pipeline/load_ranges.hpp"
#include "pipeline/match.hpp"
#include "pipeline/runtime_impl.hpp"

#include <ckpt/load.hpp>

#include <boost/asio/co_spawn.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <optional>
#include <unordered_map>

namespace ckpt {

namespace asio = boost::asio;

namespace {

// Destination memory for one leaf. A hostile index can claim any size: failing to allocate is an
// error, never an exception escaping the pipeline (found by the hostile-index tests).
result<ckpt::array> allocate_leaf(const format::leaf_entry& le) {
  try {
    return array::adopt(le.dtype, le.shape, aligned_buffer::for_array(le.num_bytes));
  } catch (const std::bad_alloc&) {
    return fail(errc::limit_exceeded, "leaf \"" + le.path + "\": cannot allocate " +
                                          std::to_string(le.num_bytes) + " bytes");
  }
}

using checkpoint::checkpoint_files;
using files_ptr = std::shared_ptr<checkpoint_files>;

// The small files through the one reader (checkpoint/files.hpp), stopping at the first problem,
// which becomes the error. A sharded checkpoint is refused with a pointer to the sharded loader
// unless `allow_sharded`. `keep_dir`: the directory stays open for the caller to close.
asio::awaitable<result<files_ptr>> open_checkpoint(io::engine& io, const std::filesystem::path& p,
                                                   bool with_index, bool allow_sharded,
                                                   bool keep_dir) {
  checkpoint::read_options ro;
  ro.index = with_index;
  ro.stop_at_first = true;
  ro.keep_dir = keep_dir;
  CKPT_CO_TRY(checkpoint_files read, co_await checkpoint::read_files(io, p, ro));
  auto cf = std::make_shared<checkpoint_files>(std::move(read));
  std::optional<error> e;
  if (cf->sharded_commit && !allow_sharded) {
    e = error(errc::invalid_argument,
              cf->where + " is a sharded checkpoint (" + std::to_string(cf->sharded_commit->ranks) +
                  " ranks): load it with load_sharded or load_sharded_full (ckpt/shard.hpp)");
  } else if (!cf->committed()) {
    e = cf->first_problem();
  }
  if (e) {
    if (cf->dir.fd >= 0) (void)co_await io.close(cf->dir);
    co_return fail(std::move(*e));
  }
  co_return cf;
}

// The data files below the (open) checkpoint directory, each one's size checked against the
// index before any destination memory is allocated: a claimed 1 TiB leaf over a small file
// costs nothing. The first problem is the error; nothing stays open then.
asio::awaitable<result<std::vector<io::file>>> open_checked_files(io::engine& io,
                                                                  const checkpoint_files& cf,
                                                                  bool direct) {
  std::optional<error> first;
  auto files = co_await pipeline::open_data_files(
      io, cf, *cf.index, {}, direct, true,
      [&](std::uint32_t f, std::error_code code, std::string msg) {
        if (!first)
          first = error(code, cf.where + "/" + format::file_label(cf.index->files[f]) + ": " + msg);
      });
  if (first) {
    co_await pipeline::close_files(io, files);
    co_return fail(std::move(*first));
  }
  co_return files;
}

// Where one leaf of the checkpoint goes: its chunks decoded into `dest`, or (ranged reads)
// chunks [first_chunk, end_chunk) handed to `sink`.
struct target {
  std::uint32_t leaf;
  std::span<std::byte> dest;
  std::uint32_t first_chunk = 0;
  std::uint32_t end_chunk = UINT32_MAX;
  const detail::range_read* sink = nullptr;
  std::string_view caller_leaf = {};  // set when `dest` is the caller's (template's) memory
};

// The arrays a load restores, one per leaf of the tree it rebuilds, in tree::flatten's order
// (empty where partial mode skipped the leaf): rebuild walks the tree in that same order, so
// no leaf path is built or looked up twice.
using restored_leaves = std::vector<std::optional<ckpt::array>>;

// Matches a template against the checkpoint (pipeline/match.hpp). Fills `targets` and
// `restored` or reports every mismatch.
result<void> match_template(const format::index& ix, const tree& tmpl, const load_options& opt,
                            std::vector<target>& targets, restored_leaves& restored,
                            const std::string& where) {
  // The template's leaves by path, not copied (copying 20,000 arrays took 7 ms of the match).
  struct listed {
    std::string path;
    const ckpt::array* array;
  };
  std::vector<listed> flat;
  detail::for_each_leaf_path(tmpl, [&](const std::string& path, const ckpt::array& a) {
    flat.push_back({path, &a});
  });
  std::vector<pipeline::leaf_desc> asked, saved;
  asked.reserve(flat.size());
  for (const auto& fl : flat)
    asked.push_back({fl.path, fl.array->dtype(), fl.array->shape()});
  saved.reserve(ix.leaves.size());
  for (const auto& le : ix.leaves)
    saved.push_back({le.path, le.dtype, le.shape});
  CKPT_TRY(auto matched, pipeline::match_leaves(asked, saved, opt.partial, {}, where));
  restored.resize(flat.size());
  targets.reserve(flat.size());
  for (std::size_t a = 0; a < flat.size(); ++a) {
    if (matched[a] < 0) continue;
    const auto li = static_cast<std::uint32_t>(matched[a]);
    ckpt::array dest = *flat[a].array;
    if (opt.in_place_only && !dest.is_writable() && !dest.is_spec() && dest.num_bytes() > 0) {
      return fail(errc::invalid_argument, where + ": template leaf \"" + flat[a].path +
                                              "\" is read-only (" + dest.describe() +
                                              "), and load_options::in_place_only is set");
    }
    if (!dest.is_writable() || dest.is_spec() || dest.num_bytes() == 0) {
      CKPT_TRY(dest, allocate_leaf(ix.leaves[li]));
    }
    const bool in_place = dest.mutable_bytes().data() == flat[a].array->bytes().data();
    targets.push_back({li, dest.mutable_bytes()});
    if (in_place) targets.back().caller_leaf = ix.leaves[li].path;
    restored[a] = std::move(dest);
  }
  return success();
}

// Rebuilds `tmpl` with the restored arrays, taken in order from `next`; partial mode drops
// leaves that were skipped.
tree rebuild(const tree& tmpl, restored_leaves::iterator& next, bool& any) {
  switch (tmpl.type()) {
    case tree::kind::none:
      return tree();
    case tree::kind::leaf: {
      auto& a = *next++;
      if (!a) return tree();
      any = true;
      return tree(std::move(*a));
    }
    case tree::kind::dict: {
      tree out = tree::dict();
      for (const auto& [k, v] : tmpl.items()) {
        bool child_any = false;
        tree c = rebuild(v, next, child_any);
        if (child_any || v.is_none() || (v.size() == 0 && !v.is_leaf())) out.set(k, std::move(c));
        any = any || child_any;
      }
      return out;
    }
    case tree::kind::list: {
      tree out = tree::list();
      for (const auto& e : tmpl.elements()) {
        bool child_any = false;
        out.append(rebuild(e, next, child_any));
        any = any || child_any;
      }
      return out;
    }
  }
  return tree();
}

// Reads the extents of a set of targets, at most the staging budget in flight, and decodes
// each one on the CPU pool. It owns what its tasks use: the checkpoint's files, the targets and
// (ranged reads) whoever owns the sinks.
struct reader : std::enable_shared_from_this<reader> {
  std::shared_ptr<runtime> rt;
  std::shared_ptr<const checkpoint_files> cf;
  std::shared_ptr<const void> sinks_owner;
  std::vector<target> targets;
  std::vector<io::file> files;
  std::vector<pipeline::extent> extents;
  bool verify = true;
  // Read and verify only, into staging buffers (load_options::verify_first's first pass).
  bool check_only = false;
  // Per target: a chunk was decoded into its destination (set on the CPU pool).
  std::unique_ptr<std::atomic<bool>[]> written;

  const format::index& ix() const { return *cf->index; }
  const std::string& where() const { return cf->where; }

  static std::uint64_t raw_offset(const format::leaf_entry& le, std::uint32_t ci) {
    std::uint64_t off = 0;
    for (std::uint32_t k = 0; k < ci; ++k)
      off += le.chunks[k].raw_size;
    return off;
  }
  std::string where_chunk(const format::leaf_entry& le, std::uint32_t ci) const {
    const auto& c = le.chunks[ci];
    return where() + ": leaf \"" + le.path + "\" chunk " + std::to_string(ci) + " (" +
           format::file_label(ix().files[c.file]) + " at offset " + std::to_string(c.offset) + ")";
  }
  result<void> check_sum(const format::leaf_entry& le, std::uint32_t ci,
                         std::span<const std::byte> stored) const {
    const std::uint64_t got = format::checksum(stored);
    if (got == le.chunks[ci].xxh3) return success();
    return fail(errc::corrupt, where_chunk(le, ci) + ": checksum mismatch (index says " +
                                   format::checksum_hex(le.chunks[ci].xxh3) + ", data has " +
                                   format::checksum_hex(got) + ")");
  }
  // A chunk read straight into its destination: raw, page-aligned in its file and in the
  // destination, and big enough to be worth a read of its own.
  bool into_place(const pipeline::chunk_ref& r) const {
    if (check_only) return false;
    const target& t = targets[r.sel];
    if (t.sink) return false;
    const auto& le = ix().leaves[t.leaf];
    const auto& c = le.chunks[r.chunk];
    if (c.codec != format::codec::raw || c.raw_size < pipeline::direct_min ||
        c.offset % pipeline::io_align != 0 || c.stored_size != c.raw_size) {
      return false;
    }
    const auto* dst = t.dest.data() + raw_offset(le, r.chunk);
    return reinterpret_cast<std::uintptr_t>(dst) % pipeline::io_align == 0;
  }

  result<void> decode_extent(const pipeline::extent& e, std::span<const std::byte> data) const {
    for (const auto& ref : e.chunks) {
      const std::uint32_t ci = ref.chunk;
      const target& t = targets[ref.sel];
      const auto& le = ix().leaves[t.leaf];
      const auto& c = le.chunks[ci];
      std::span<const std::byte> stored = data.subspan(c.offset - e.start, c.stored_size);
      if (verify || check_only) {
        CKPT_TRY(check_sum(le, ci, stored));
      }
      if (check_only) continue;
      const std::uint64_t raw_off = raw_offset(le, ci);
      if (t.sink) {
        if (c.codec == format::codec::raw && c.runs.empty()) {
          t.sink->sink(raw_off, stored);
          continue;
        }
        thread_local std::vector<std::byte> scratch;
        try {
          if (scratch.size() < c.raw_size) scratch.resize(c.raw_size);
        } catch (const std::bad_alloc&) {
          return fail(errc::limit_exceeded, where_chunk(le, ci) + ": cannot allocate " +
                                                std::to_string(c.raw_size) + " bytes");
        }
        std::span<std::byte> raw(scratch.data(), c.raw_size);
        auto r = format::decode_chunk(c.codec, stored, dtype_size(le.dtype), c.runs, raw);
        if (!r) return fail(std::move(r).error().with_context(where_chunk(le, ci)));
        t.sink->sink(raw_off, raw);
        continue;
      }
      written[ref.sel].store(true, std::memory_order_relaxed);
      auto r = format::decode_chunk(c.codec, stored, dtype_size(le.dtype), c.runs,
                                    t.dest.subspan(raw_off, c.raw_size));
      if (!r) return fail(std::move(r).error().with_context(where_chunk(le, ci)));
    }
    return success();
  }

  // What a failed load already wrote into the caller's memory, for its error (empty: nothing).
  std::string written_note() const {
    std::vector<std::string_view> leaves;
    if (std::none_of(targets.begin(), targets.end(),
                     [](const target& t) { return !t.caller_leaf.empty(); })) {
      return {};  // no template memory restored in place
    }
    for (std::size_t i = 0; i < targets.size(); ++i) {
      if (!targets[i].caller_leaf.empty() && written[i].load()) {
        leaves.push_back(targets[i].caller_leaf);
      }
    }
    if (leaves.empty()) return "nothing was written into the template's memory";
    std::string s = "the template's memory of " + std::to_string(leaves.size()) +
                    (leaves.size() == 1 ? " leaf" : " leaves") +
                    " was partly or wholly overwritten, every other leaf is untouched:";
    constexpr std::size_t shown = 20;
    for (std::size_t i = 0; i < std::min(leaves.size(), shown); ++i)
      s += std::string(i ? ", " : " ") + "\"" + std::string(leaves[i]) + "\"";
    if (leaves.size() > shown) s += " and " + std::to_string(leaves.size() - shown) + " more";
    return s;
  }

  asio::awaitable<result<void>> decode_on_pool(std::size_t i, std::span<const std::byte> data) {
    auto self = shared_from_this();
    co_return decode_extent(extents[i], data);
  }

  result<void> truncated(const pipeline::extent& e, std::uint64_t got, std::uint64_t need) const {
    return fail(errc::corrupt, where() + "/" + format::file_label(ix().files[e.file]) +
                                   " is truncated (read " + std::to_string(got) + " bytes, needs " +
                                   std::to_string(need) + ")");
  }

  asio::awaitable<result<void>> read_and_decode(std::size_t i, std::span<std::byte> buf) {
    auto& rti = detail::access::internals(*rt);
    const pipeline::extent& e = extents[i];
    const std::string name = format::file_label(ix().files[e.file]);
    auto n = co_await rt->io().read(files[e.file], buf, e.start);
    if (!n) co_return fail(std::move(n).error().with_context("read " + where() + "/" + name));
    std::uint64_t need = 0;
    for (const auto& ref : e.chunks) {
      const auto& c = ix().leaves[targets[ref.sel].leaf].chunks[ref.chunk];
      need = std::max(need, c.offset + c.stored_size - e.start);
    }
    if (n.value() < need) co_return truncated(e, e.start + n.value(), e.start + need);
    co_return co_await detail::run_on(rti.pool.get_executor(), decode_on_pool(i, buf));
  }

  asio::awaitable<result<void>> verify_on_pool(const format::leaf_entry& le, std::uint32_t ci,
                                               std::span<const std::byte> bytes) {
    auto self = shared_from_this();
    co_return check_sum(le, ci, bytes);
  }

  // One chunk read straight into its destination (whole pages; a partial last page through a
  // one-page bounce buffer), then verified there.
  asio::awaitable<result<void>> read_into_place(std::size_t i) {
    auto& rti = detail::access::internals(*rt);
    const pipeline::extent& e = extents[i];
    const pipeline::chunk_ref r = e.chunks[0];
    const target& t = targets[r.sel];
    const auto& le = ix().leaves[t.leaf];
    const auto& c = le.chunks[r.chunk];
    std::span<std::byte> dst = t.dest.subspan(raw_offset(le, r.chunk), c.raw_size);
    const std::uint64_t whole = c.raw_size / pipeline::io_align * pipeline::io_align;
    const std::string name = format::file_label(ix().files[e.file]);
    written[r.sel].store(true, std::memory_order_relaxed);
    auto n = co_await rt->io().read(files[e.file], dst.first(whole), c.offset);
    if (!n) co_return fail(std::move(n).error().with_context("read " + where() + "/" + name));
    if (n.value() < whole) co_return truncated(e, c.offset + n.value(), c.offset + c.raw_size);
    if (whole < c.raw_size) {
      aligned_buffer tail(pipeline::io_align);
      auto m = co_await rt->io().read(files[e.file], tail.span(), c.offset + whole);
      if (!m) co_return fail(std::move(m).error().with_context("read " + where() + "/" + name));
      if (m.value() < c.raw_size - whole) {
        co_return truncated(e, c.offset + whole + m.value(), c.offset + c.raw_size);
      }
      std::memcpy(dst.data() + whole, tail.data(), c.raw_size - whole);
    }
    if (!verify) co_return success();
    co_return co_await detail::run_on(rti.pool.get_executor(), verify_on_pool(le, r.chunk, dst));
  }

  asio::awaitable<result<void>> read_one(std::size_t i) {
    auto self = shared_from_this();
    auto& rti = detail::access::internals(*rt);
    if (extents[i].chunks.size() == 1 && into_place(extents[i].chunks[0])) {
      co_return co_await read_into_place(i);
    }
    if (extents[i].length == 0) {  // fill runs only: nothing to read
      co_return co_await detail::run_on(rti.pool.get_executor(), decode_on_pool(i, {}));
    }
    // Staged: the extent's bytes in a buffer of the runtime's staging budget.
    const auto cost = detail::buffer_pool::size_class(extents[i].length);
    co_await rti.staging.acquire(cost);
    aligned_buffer buf = rti.buffers.take_faulted(extents[i].length);
    auto r = co_await read_and_decode(i, buf.span());
    rti.buffers.give(std::move(buf));
    rti.staging.release(cost);
    co_return r;
  }

  // At most stream_window bytes of extents in flight (the staging budget when smaller); the
  // staged ones also hold their buffer's bytes of the runtime's staging budget.
  asio::awaitable<result<void>> run() {
    auto self = shared_from_this();
    auto& rti = detail::access::internals(*rt);
    detail::async_budget window(std::min(rti.staging.capacity(), pipeline::stream_window));
    detail::task_group g(co_await asio::this_coro::executor);
    for (std::size_t i = 0; i < extents.size(); ++i) {
      const auto cost = detail::buffer_pool::size_class(extents[i].length);
      const bool started = co_await g.spawn(read_one(i), &window, cost);
      if (!started) break;
    }
    co_return co_await g.wait();
  }
};

// Reads the chunks of `targets` from `files` (opened by open_checked_files; closed here).
asio::awaitable<result<void>> read_targets(std::shared_ptr<runtime> rt,
                                           std::shared_ptr<const checkpoint_files> cf,
                                           std::vector<io::file> files, std::vector<target> targets,
                                           const load_options& opt,
                                           std::shared_ptr<const void> sinks_owner = nullptr) {
  auto rd = std::make_shared<reader>();
  rd->rt = rt;
  rd->cf = std::move(cf);
  rd->sinks_owner = std::move(sinks_owner);
  rd->targets = std::move(targets);
  rd->files = std::move(files);
  rd->verify = opt.verify_checksums;
  std::vector<pipeline::selection> sels;
  sels.reserve(rd->targets.size());
  for (const auto& t : rd->targets)
    sels.push_back({t.leaf, t.first_chunk, t.end_chunk});
  rd->written = std::make_unique<std::atomic<bool>[]>(rd->targets.size());
  result<void> r = success();
  if (opt.verify_first) {
    // Every chunk read and verified in staging buffers before the destinations are touched.
    rd->check_only = true;
    rd->extents = pipeline::plan_extents(rd->ix(), sels);
    r = co_await rd->run();
    rd->check_only = false;
  }
  if (r) {
    rd->extents = pipeline::plan_extents(
        rd->ix(), sels, nullptr, [&](const pipeline::chunk_ref& c) { return rd->into_place(c); });
    r = co_await rd->run();
  }
  co_await pipeline::close_files(rt->io(), rd->files);
  if (!r) {
    const std::string note = rd->written_note();
    if (!note.empty())
      co_return fail(error(r.error().code(), r.error().message() + " (" + note + ")"));
  }
  co_return r;
}

asio::awaitable<result<loaded_checkpoint>> load_impl(std::shared_ptr<runtime> rt,
                                                     std::filesystem::path path, const tree* tmpl,
                                                     std::string subtree, bool want_subtree,
                                                     load_options opt) {
  auto& io = rt->io();
  CKPT_CO_TRY(files_ptr cf, co_await open_checkpoint(io, path, true, false, true));
  auto files = co_await open_checked_files(io, *cf, opt.direct_io);
  (void)co_await io.close(cf->dir);
  cf->dir.fd = -1;
  if (!files) co_return fail(std::move(files).error());
  const format::index& ix = *cf->index;
  std::vector<target> targets;
  restored_leaves restored;
  tree structure;               // (a subtree's load: the checkpoint's tree)
  const tree* shape = nullptr;  // what to rebuild from `restored`
  tree whole;  // or, for the whole checkpoint, the result built straight from the index
  result<void> m = success();
  if (want_subtree) {
    structure = format::structure(ix);
    auto node = structure.at(subtree);
    if (!node) {
      m = fail(std::move(node).error().with_context(cf->where));
    } else {
      // Only the subtree's leaves: their checkpoint paths carry the subtree's path as prefix.
      shape = node.value();
      std::unordered_map<std::string_view, std::uint32_t> by_path;
      for (std::uint32_t i = 0; i < ix.leaves.size(); ++i)
        by_path.emplace(ix.leaves[i].path, i);
      detail::for_each_leaf_path(*shape, [&](const std::string& leaf_path, const ckpt::array&) {
        if (!m) return;
        const std::uint32_t i =
            by_path.at(leaf_path.empty() ? subtree : join_path(subtree, leaf_path));
        auto z = allocate_leaf(ix.leaves[i]);
        if (!z) {
          m = fail(z.error());
          return;
        }
        targets.push_back({i, z.value().mutable_bytes()});
        restored.emplace_back(std::move(z.value()));
      });
    }
  } else if (tmpl) {
    shape = tmpl;
    m = match_template(ix, *tmpl, opt, targets, restored, cf->where);
  } else {
    targets.reserve(ix.leaves.size());
    auto t = format::build_tree(ix, [&](std::size_t i) -> result<ckpt::array> {
      auto z = allocate_leaf(ix.leaves[i]);
      if (z) targets.push_back({static_cast<std::uint32_t>(i), z.value().mutable_bytes()});
      return z;
    });
    if (t) {
      whole = std::move(t).value();
    } else {
      m = fail(std::move(t).error());
    }
  }
  if (!m) {
    co_await pipeline::close_files(io, files.value());
    co_return fail(m.error());
  }
  CKPT_CO_TRY(co_await read_targets(rt, cf, std::move(files).value(), std::move(targets), opt));
  loaded_checkpoint out;
  bool any = false;
  auto next = restored.begin();
  out.tree = shape ? rebuild(*shape, next, any) : std::move(whole);
  out.metadata = std::move(*cf->metadata);
  out.job = std::move(cf->job);
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

namespace detail {

struct ranged_checkpoint {
  files_ptr cf;
  std::vector<range_read> reads;  // the sinks the targets point at
  std::vector<target> targets;
};

asio::awaitable<result<std::shared_ptr<ranged_checkpoint>>> open_for_ranges(
    std::shared_ptr<runtime> rt, std::filesystem::path dir, std::optional<expected_commit> commit,
    std::vector<range_read> reads) {
  auto& io = rt->io();
  auto out = std::make_shared<ranged_checkpoint>();
  CKPT_CO_TRY(out->cf, co_await open_checkpoint(io, dir, true, false, true));
  out->reads = std::move(reads);
  auto& c = *out->cf;
  const format::index& ix = *c.index;
  result<void> ok = success();
  {
    auto files = co_await open_checked_files(io, c, false);
    if (files) {
      co_await pipeline::close_files(io, files.value());
    } else {
      ok = fail(std::move(files).error());
    }
  }
  (void)co_await io.close(c.dir);
  c.dir.fd = -1;
  if (ok && commit && (commit->bytes != c.commit_bytes || commit->xxh3 != c.commit_xxh3)) {
    ok = fail(errc::corrupt, c.where + "/COMMIT is " + std::to_string(c.commit_bytes) +
                                 " bytes with checksum " + format::checksum_hex(c.commit_xxh3) +
                                 ", the sharded index records " + std::to_string(commit->bytes) +
                                 " bytes with " + format::checksum_hex(commit->xxh3) +
                                 " (a rank directory from another save?)");
  }
  if (!ok) co_return fail(std::move(ok).error());
  std::unordered_map<std::string_view, std::uint32_t> by_path;
  for (std::uint32_t i = 0; i < ix.leaves.size(); ++i)
    by_path.emplace(ix.leaves[i].path, i);
  for (const auto& rr : out->reads) {
    auto it = by_path.find(rr.leaf);
    if (it == by_path.end()) {
      co_return fail(errc::corrupt, c.where + ": leaf \"" + rr.leaf +
                                        "\" is missing (the sharded index places a slice there)");
    }
    const auto& le = ix.leaves[it->second];
    if (le.dtype != rr.dtype || le.shape != rr.shape) {
      co_return fail(errc::corrupt, c.where + ": leaf \"" + rr.leaf + "\" is " +
                                        std::string(dtype_name(le.dtype)) +
                                        shape_to_string(le.shape) + ", the sharded index says " +
                                        std::string(dtype_name(rr.dtype)) +
                                        shape_to_string(rr.shape));
    }
    if (rr.begin > rr.end || rr.end > le.num_bytes) {
      co_return fail(errc::invalid_argument, c.where + ": leaf \"" + rr.leaf + "\": byte range " +
                                                 std::to_string(rr.begin) + ".." +
                                                 std::to_string(rr.end) + " is not inside it");
    }
    if (!rr.dest.empty()) {  // the whole leaf into the caller's memory, as a load does
      if (rr.begin != 0 || rr.end != le.num_bytes || rr.dest.size() != le.num_bytes) {
        co_return fail(errc::invalid_argument,
                       c.where + ": leaf \"" + rr.leaf + "\": a read into place takes it whole");
      }
      out->targets.push_back(target{it->second, rr.dest});
      continue;
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
    out->targets.push_back(t);
  }
  co_return out;
}

asio::awaitable<result<void>> read_ranges(std::shared_ptr<runtime> rt,
                                          std::shared_ptr<ranged_checkpoint> ck,
                                          load_options options) {
  auto& io = rt->io();
  auto& c = *ck->cf;
  // (Opened again: validation closed it so that many checkpoints can be validated at once.)
  auto d = co_await io.open(AT_FDCWD, c.where, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (!d) co_return fail(std::move(d).error().with_context("open checkpoint " + c.where));
  c.dir = d.value();
  auto files = co_await open_checked_files(io, c, options.direct_io);
  (void)co_await io.close(c.dir);
  c.dir.fd = -1;
  if (!files) co_return fail(std::move(files).error());
  co_return co_await read_targets(rt, ck->cf, std::move(files).value(), ck->targets, options, ck);
}

}  // namespace detail

namespace {
// The small files of an ordinary checkpoint, or of a sharded one (its COMMIT and sharded index
// checked), without opening a data file.
asio::awaitable<result<files_ptr>> open_meta(std::shared_ptr<runtime> rt,
                                             std::filesystem::path path, bool with_index) {
  co_return co_await open_checkpoint(rt->io(), path, with_index, true, false);
}
}  // namespace

asio::awaitable<result<boost::json::object>> load_metadata(std::filesystem::path path,
                                                           std::shared_ptr<runtime> rt) {
  rt = runtime_or_global(rt);
  CKPT_CO_TRY(auto cf,
              co_await detail::run_on(rt->executor(), open_meta(rt, std::move(path), false)));
  co_return std::move(*cf->metadata);
}

result<boost::json::object> load_metadata_blocking(std::filesystem::path path,
                                                   std::shared_ptr<runtime> rt) {
  rt = runtime_or_global(rt);
  CKPT_TRY(auto cf, detail::run_blocking(rt->executor(), open_meta(rt, std::move(path), false)));
  return std::move(*cf->metadata);
}

asio::awaitable<result<boost::json::object>> load_job(std::filesystem::path path,
                                                      std::shared_ptr<runtime> rt) {
  rt = runtime_or_global(rt);
  CKPT_CO_TRY(auto cf, co_await detail::run_on(rt->executor(), open_meta(rt, path, false)));
  if (!cf->job) co_return fail(errc::not_found, path.string() + " has no job.json");
  co_return std::move(*cf->job);
}

result<boost::json::object> load_job_blocking(std::filesystem::path path,
                                              std::shared_ptr<runtime> rt) {
  rt = runtime_or_global(rt);
  CKPT_TRY(auto cf, detail::run_blocking(rt->executor(), open_meta(rt, path, false)));
  if (!cf->job) return fail(errc::not_found, path.string() + " has no job.json");
  return std::move(*cf->job);
}

asio::awaitable<result<bool>> detail::committed(io::engine& io, std::filesystem::path path) {
  // (Sharded checkpoints count too: their COMMIT and sharded index are checked.)
  auto cf = co_await open_checkpoint(io, path, true, true, false);
  if (cf) co_return true;
  if (cf.error() == errc::not_found || cf.error() == errc::not_committed ||
      cf.error() == errc::corrupt || cf.error() == errc::unsupported_version ||
      cf.error() == std::errc::not_a_directory) {
    co_return false;
  }
  co_return fail(cf.error());
}

result<bool> is_committed(std::filesystem::path path, std::shared_ptr<runtime> rt) {
  rt = runtime_or_global(rt);
  return detail::run_blocking(rt->executor(), detail::committed(rt->io(), std::move(path)));
}

}  // namespace ckpt
