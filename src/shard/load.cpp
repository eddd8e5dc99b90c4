// Sharded checkpoints: resharding loads and info (see the top of ckpt/shard.hpp).
//
// The sharded index says which rank's checkpoint holds which slice; every wanted slice is
// intersected with the saved ones, each non-empty intersection becomes a ranged read of the
// saved leaf (the bytes from its first to its last element), and a sink copies the
// intersection's rows out of each decoded chunk; a wanted slice that is a saved one (a load with
// the save's sharding) is read into its memory as a load fills a template, with no copy. All
// needed rank checkpoints are validated before the first byte lands in the caller's memory.
#include "checkpoint/durable.hpp"
#include "checkpoint/files.hpp"
#include "format/codec.hpp"
#include "format/index.hpp"
#include "format/sharded.hpp"
#include "io/async.hpp"
#include "pipeline/load_ranges.hpp"
#include "pipeline/match.hpp"
#include "pipeline/runtime_impl.hpp"
#include "shard/common.hpp"
#include "shard/outcome_wire.hpp"
#include "testing/testing.hpp"

#include <ckpt/shard.hpp>

#include <boost/asio/use_awaitable.hpp>
#include <boost/json/array.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <unordered_set>

namespace ckpt {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using shard_detail::check_leaf;
using shard_detail::to_box;

// ---------------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------------

namespace {

// Copies the elements of region `I` out of a saved slice `S` (C order) into a wanted slice `T`
// (C order), all of one dtype. The copy is a sequence of runs, each contiguous in both: the
// trailing dimensions where I spans both S and T whole merge into one run. Run j's offsets
// follow from its index, so a chunk's runs are found by binary search, never listed.
struct region_copy {
  std::size_t k = 0;                                  // dimensions [0, k) enumerate runs
  std::uint64_t runs = 0;                             // number of runs
  std::uint64_t run_bytes = 0;                        // bytes per run
  std::uint64_t src0 = 0, dst0 = 0;                   // byte offsets of run 0
  std::vector<std::uint64_t> count;                   // I's extents in dims [0, k)
  std::vector<std::uint64_t> src_stride, dst_stride;  // bytes, dims [0, k)
  std::byte* dst = nullptr;

  region_copy(const format::box& i, const format::box& s, const format::box& t, std::size_t es,
              std::byte* dest)
      : dst(dest) {
    const std::size_t n = i.offset.size();
    std::vector<std::uint64_t> ss(n, es), ts(n, es);  // byte strides
    for (std::size_t d = n; d-- > 1;) {
      ss[d - 1] = ss[d] * static_cast<std::uint64_t>(s.extent[d]);
      ts[d - 1] = ts[d] * static_cast<std::uint64_t>(t.extent[d]);
    }
    for (std::size_t d = 0; d < n; ++d) {
      src0 += static_cast<std::uint64_t>(i.offset[d] - s.offset[d]) * ss[d];
      dst0 += static_cast<std::uint64_t>(i.offset[d] - t.offset[d]) * ts[d];
    }
    k = n == 0 ? 0 : n - 1;
    while (k > 0 && i.extent[k] == s.extent[k] && i.extent[k] == t.extent[k])
      --k;
    run_bytes = es;
    for (std::size_t d = k; d < n; ++d)
      run_bytes *= static_cast<std::uint64_t>(i.extent[d]);
    runs = 1;
    for (std::size_t d = 0; d < k; ++d) {
      count.push_back(static_cast<std::uint64_t>(i.extent[d]));
      src_stride.push_back(ss[d]);
      dst_stride.push_back(ts[d]);
      runs *= static_cast<std::uint64_t>(i.extent[d]);
    }
  }
  void offsets(std::uint64_t j, std::uint64_t& src, std::uint64_t& dst_off) const {
    src = src0;
    dst_off = dst0;
    for (std::size_t d = k; d-- > 0;) {
      const std::uint64_t x = j % count[d];
      j /= count[d];
      src += x * src_stride[d];
      dst_off += x * dst_stride[d];
    }
  }
  std::uint64_t begin() const { return src0; }
  std::uint64_t end() const {
    std::uint64_t s, d;
    offsets(runs - 1, s, d);
    return s + run_bytes;
  }
  // Raw bytes [off, off + raw.size()) of S arrived: copy the parts of runs inside them.
  void operator()(std::uint64_t off, std::span<const std::byte> raw) const {
    const std::uint64_t hi = off + raw.size();
    // The first run that ends after `off`.
    std::uint64_t lo_j = 0, hi_j = runs;
    while (lo_j < hi_j) {
      const std::uint64_t mid = lo_j + (hi_j - lo_j) / 2;
      std::uint64_t s, d;
      offsets(mid, s, d);
      if (s + run_bytes <= off) {
        lo_j = mid + 1;
      } else {
        hi_j = mid;
      }
    }
    for (std::uint64_t j = lo_j; j < runs; ++j) {
      std::uint64_t s, d;
      offsets(j, s, d);
      if (s >= hi) break;
      const std::uint64_t a = std::max(s, off), b = std::min(s + run_bytes, hi);
      std::memcpy(dst + d + (a - s), raw.data() + (a - off), b - a);
    }
  }
};

// The saved slices of one leaf that may overlap a region: sorted along the dimension where
// they have the most distinct offsets (the slicing dimension), so a lookup is a binary search
// plus the overlapping neighbours, not a scan of every rank's slice.
class slice_finder {
 public:
  explicit slice_finder(const format::sharded_leaf_entry& le) : le_(le) {
    order_.resize(le.slices.size());
    for (std::size_t i = 0; i < order_.size(); ++i)
      order_[i] = i;
    if (le.shape.empty() || order_.size() < 16) return;  // a scan is as good
    std::size_t best_distinct = 0;
    for (std::size_t d = 0; d < le.shape.size(); ++d) {
      std::set<std::int64_t> offs;
      for (const auto& sl : le.slices)
        offs.insert(sl.where.offset[d]);
      if (offs.size() > best_distinct) dim_ = d, best_distinct = offs.size();
    }
    std::sort(order_.begin(), order_.end(), [&](std::size_t a, std::size_t b) {
      return le.slices[a].where.offset[dim_] < le.slices[b].where.offset[dim_];
    });
    for (const auto& sl : le.slices)
      max_extent_ = std::max(max_extent_, sl.where.extent[dim_]);
    sorted_ = true;
  }
  template <class F>
  void for_each_candidate(const format::box& t, F&& f) const {
    if (!sorted_) {
      for (auto i : order_)
        f(le_.slices[i]);
      return;
    }
    const std::int64_t lo = t.offset[dim_] - max_extent_ + 1, hi = t.offset[dim_] + t.extent[dim_];
    auto first = std::lower_bound(
        order_.begin(), order_.end(), lo,
        [&](std::size_t i, std::int64_t v) { return le_.slices[i].where.offset[dim_] < v; });
    for (auto it = first; it != order_.end() && le_.slices[*it].where.offset[dim_] < hi; ++it)
      f(le_.slices[*it]);
  }

 private:
  const format::sharded_leaf_entry& le_;
  std::vector<std::size_t> order_;
  std::size_t dim_ = 0;
  std::int64_t max_extent_ = 0;
  bool sorted_ = false;
};

// What one rank's checkpoint must deliver (owned by the tasks that validate and read it).
struct rank_reads {
  std::uint32_t rank = 0;
  std::vector<detail::range_read> reads;  // handed to open_for_ranges, which keeps them
  std::shared_ptr<detail::ranged_checkpoint> opened;
};

constexpr std::size_t rank_width = 8;  // rank checkpoints validated / read at once

// Runs `make(rr)` for every rank, at most rank_width at once; the first error wins.
template <class Make>
asio::awaitable<result<void>> for_each_rank(const std::vector<std::shared_ptr<rank_reads>>& ranks,
                                            Make make) {
  detail::async_budget slots(rank_width);  // (outlives wait(): the group's contract)
  detail::task_group g(co_await asio::this_coro::executor);
  for (const auto& rr : ranks) {
    const bool started = co_await g.spawn(make(rr), &slots, 1);
    if (!started) break;
  }
  co_return co_await g.wait();
}

asio::awaitable<result<void>> open_rank(std::shared_ptr<runtime> rt, fs::path dir,
                                        detail::expected_commit commit,
                                        std::shared_ptr<rank_reads> rr) {
  CKPT_CO_TRY(rr->opened, co_await detail::open_for_ranges(rt, dir, commit, std::move(rr->reads)));
  co_return success();
}

asio::awaitable<result<void>> read_rank(std::shared_ptr<runtime> rt, std::shared_ptr<rank_reads> rr,
                                        load_options options) {
  co_return co_await detail::read_ranges(rt, rr->opened, options);
}

// The small files of a sharded checkpoint (checkpoint/files.hpp), the first problem an error.
asio::awaitable<result<checkpoint::checkpoint_files>> open_sharded(io::engine& io, fs::path path) {
  checkpoint::read_options ro;
  ro.stop_at_first = true;
  CKPT_CO_TRY(auto cf, co_await checkpoint::read_files(io, path, ro));
  if (!cf.sharded() && cf.committed()) {
    co_return fail(errc::invalid_argument,
                   path.string() + " is an ordinary checkpoint, not a sharded one (use load)");
  }
  if (!cf.committed()) co_return fail(cf.first_problem());
  co_return cf;
}

// The wanted slices from the sharded checkpoint at `path`, whose small files `cf` holds.
asio::awaitable<result<sharded_loaded>> load_slices(std::shared_ptr<runtime> rt, fs::path path,
                                                    checkpoint::checkpoint_files cf,
                                                    std::vector<sharded_leaf> wanted,
                                                    load_options opt) {
  const std::string where = path.string();
  const format::sharded_index& ix = *cf.sharded_index;

  // Match the request against the index (pipeline/match.hpp); every mismatch at once.
  std::vector<pipeline::leaf_desc> asked, saved;
  for (const auto& w : wanted) {
    CKPT_CO_TRYV_CTX(check_leaf(w, false), "load " + where);
    asked.push_back({w.path, w.dtype, w.global_shape});
  }
  for (const auto& le : ix.leaves)
    saved.push_back({le.path, le.dtype, le.shape});
  pipeline::match_words words;
  words.asked = "wanted";
  words.header = "the wanted leaves do not match the checkpoint";
  words.report_unasked = false;
  CKPT_CO_TRY(auto matched, pipeline::match_leaves(asked, saved, opt.partial, words, where));
  std::vector<sharded_leaf> kept;
  std::vector<std::size_t> kept_index;
  for (std::size_t a = 0; a < wanted.size(); ++a) {
    if (matched[a] < 0) continue;
    kept.push_back(std::move(wanted[a]));
    kept_index.push_back(static_cast<std::size_t>(matched[a]));
  }

  // Destinations: in place where writable, allocated otherwise (bounded by the request), not
  // zero-filled: the saved slices partition every global array (the index parser checks it),
  // so the reads below write every byte of every wanted slice.
  for (auto& l : kept) {
    for (auto& s : l.shards) {
      if (s.data.is_writable() && !s.data.is_spec() && s.data.num_bytes() > 0) continue;
      try {
        auto bytes = byte_size(l.dtype, s.where.extent);
        if (!bytes) co_return fail(bytes.error());
        auto z = array::adopt(l.dtype, s.where.extent, aligned_buffer::for_array(bytes.value()));
        if (!z) co_return fail(z.error());
        s.data = std::move(z.value());
      } catch (const std::bad_alloc&) {
        co_return fail(errc::limit_exceeded,
                       where + ": leaf \"" + l.path + "\": cannot allocate " + s.where.to_string());
      }
    }
  }

  // Ranged reads, grouped by the rank whose checkpoint holds the saved slice.
  std::map<std::uint32_t, std::shared_ptr<rank_reads>> by_rank;
  for (std::size_t k = 0; k < kept.size(); ++k) {
    const auto& le = ix.leaves[kept_index[k]];
    const std::size_t es = dtype_size(le.dtype);
    const slice_finder finder(le);
    for (auto& s : kept[k].shards) {
      const format::box t = to_box(s.where);
      if (!box_nonempty(t)) continue;
      finder.for_each_candidate(t, [&](const format::slice_entry& saved) {
        format::box i;
        if (!box_nonempty(saved.where) || !box_intersect(t, saved.where, i)) return;
        auto& rrp = by_rank[saved.rank];
        if (!rrp) rrp = std::make_shared<rank_reads>();
        auto& rr = *rrp;
        rr.rank = saved.rank;
        detail::range_read r;
        r.leaf = saved.leaf;
        r.dtype = le.dtype;
        r.shape = saved.where.extent;
        if (saved.where == t) {
          // The wanted slice is the saved one (the same sharding as the save): its memory has
          // the saved leaf's layout, so the leaf is read into it as a load fills a template,
          // raw chunks straight from the file, with no copy.
          r.begin = 0;
          r.end = s.data.num_bytes();
          r.dest = s.data.mutable_bytes();
        } else {
          auto copy =
              std::make_shared<region_copy>(i, saved.where, t, es, s.data.mutable_bytes().data());
          r.begin = copy->begin();
          r.end = copy->end();
          r.sink = [copy](std::uint64_t off, std::span<const std::byte> raw) { (*copy)(off, raw); };
        }
        rr.reads.push_back(std::move(r));
      });
    }
  }
  std::vector<std::shared_ptr<rank_reads>> todo;
  for (auto& [r, rr] : by_rank)
    todo.push_back(rr);
  // Every needed rank checkpoint validated before any byte is copied.
  CKPT_CO_TRY(co_await for_each_rank(todo, [&](const std::shared_ptr<rank_reads>& rr) {
    const auto& re = ix.ranks[rr->rank];
    return open_rank(rt, path / re.dir, detail::expected_commit{re.commit_bytes, re.commit_xxh3},
                     rr);
  }));
  CKPT_CO_TRY(co_await for_each_rank(
      todo, [&](const std::shared_ptr<rank_reads>& rr) { return read_rank(rt, rr, opt); }));
  sharded_loaded out;
  out.leaves = std::move(kept);
  out.metadata = std::move(*cf.metadata);
  out.job = std::move(cf.job);
  co_return out;
}

result<std::vector<sharded_leaf>> whole_leaves(const format::sharded_index& ix) {
  std::vector<sharded_leaf> wanted;
  for (const auto& le : ix.leaves) {
    CKPT_TRY(auto l, sharded_leaf::spec(le.path, le.dtype, le.shape, {whole(le.shape)}));
    wanted.push_back(std::move(l));
  }
  return wanted;
}

// A dict nested along the leaves' paths.
result<tree> nest(std::vector<sharded_leaf>& leaves) {
  tree root = tree::dict();
  for (auto& l : leaves) {
    CKPT_TRY(auto parts, split_path(l.path));
    tree* node = &root;
    for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
      tree* child = node->get(parts[i]);
      if (!child) child = &node->set(parts[i], tree::dict());
      if (!child->is_dict()) {
        return fail(errc::corrupt, "leaf \"" + l.path + "\" lies below another leaf");
      }
      node = child;
    }
    node->set(parts.back(), std::move(l.shards.front().data));
  }
  return root;
}

asio::awaitable<result<sharded_loaded>> load_sharded_impl(std::shared_ptr<runtime> rt,
                                                          fs::path path,
                                                          std::vector<sharded_leaf> wanted,
                                                          load_options opt) {
  CKPT_CO_TRY(auto cf, co_await open_sharded(rt->io(), path));
  co_return co_await load_slices(rt, std::move(path), std::move(cf), std::move(wanted), opt);
}

asio::awaitable<result<loaded_checkpoint>> load_full_impl(std::shared_ptr<runtime> rt,
                                                          fs::path path, load_options opt) {
  CKPT_CO_TRY(auto cf, co_await open_sharded(rt->io(), path));
  CKPT_CO_TRY(auto wanted, whole_leaves(*cf.sharded_index));
  opt.partial = false;
  // (The small files just read are handed on, not read again.)
  CKPT_CO_TRY(auto got, co_await load_slices(rt, path, std::move(cf), std::move(wanted), opt));
  loaded_checkpoint out;
  CKPT_CO_TRY(out.tree, nest(got.leaves));
  out.metadata = std::move(got.metadata);
  out.job = std::move(got.job);
  co_return out;
}

}  // namespace

asio::awaitable<result<sharded_loaded>> load_sharded(fs::path path,
                                                     std::vector<sharded_leaf> wanted,
                                                     load_options options) {
  auto rt = runtime_or_global(options.runtime);
  co_return co_await detail::run_on(
      rt->executor(), load_sharded_impl(rt, std::move(path), std::move(wanted), options));
}

result<sharded_loaded> load_sharded_blocking(fs::path path, std::vector<sharded_leaf> wanted,
                                             load_options options) {
  auto rt = runtime_or_global(options.runtime);
  return detail::run_blocking(rt->executor(),
                              load_sharded_impl(rt, std::move(path), std::move(wanted), options));
}

asio::awaitable<result<loaded_checkpoint>> load_sharded_full(fs::path path, load_options options) {
  auto rt = runtime_or_global(options.runtime);
  co_return co_await detail::run_on(rt->executor(), load_full_impl(rt, std::move(path), options));
}

result<loaded_checkpoint> load_sharded_full_blocking(fs::path path, load_options options) {
  auto rt = runtime_or_global(options.runtime);
  return detail::run_blocking(rt->executor(), load_full_impl(rt, std::move(path), options));
}

// ---------------------------------------------------------------------------------------------
// Info
// ---------------------------------------------------------------------------------------------

result<sharded_info> read_sharded_info(const fs::path& path, std::shared_ptr<runtime> rt) {
  rt = runtime_or_global(rt);
  CKPT_TRY(auto cf, detail::run_blocking(rt->executor(), open_sharded(rt->io(), path)));
  sharded_info info;
  const auto& ix = *cf.sharded_index;
  const auto& cm = *cf.sharded_commit;
  info.ranks = static_cast<int>(ix.ranks.size());
  for (const auto& le : ix.leaves) {
    sharded_leaf_info li;
    li.path = le.path;
    li.dtype = le.dtype;
    li.global_shape = le.shape;
    li.replicated = le.replicated;
    li.num_bytes = le.num_bytes;
    for (const auto& s : le.slices)
      li.slices.push_back({{s.where.offset, s.where.extent}, static_cast<int>(s.rank)});
    info.leaves.push_back(std::move(li));
  }
  info.metadata = std::move(*cf.metadata);
  info.job = std::move(cf.job);
  info.logical_bytes = cm.logical_bytes;
  info.stored_bytes = cm.stored_bytes;
  info.created_unix_ns = cm.created_unix_ns;
  return info;
}

result<bool> is_sharded_checkpoint(const fs::path& path, std::shared_ptr<runtime> rt) {
  auto cf = checkpoint::read_files_blocking(path, {}, std::move(rt));
  if (!cf) {
    if (cf.error() == errc::not_found || cf.error() == std::errc::not_a_directory) return false;
    return fail(cf.error());
  }
  return cf.value().sharded() && cf.value().committed();
}

}  // namespace ckpt
