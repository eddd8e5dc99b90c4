// Slices of global arrays and the checks of a sharded leaf (ckpt/shard.hpp).
#include "shard/common.hpp"

#include "format/index.hpp"

#include <chrono>
#include <stdexcept>

namespace ckpt {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Slices
// ---------------------------------------------------------------------------------------------

std::string slice::to_string() const {
  return format::box_to_string({offset, extent});
}

slice whole(const ckpt::shape& global) {
  return {ckpt::shape(global.size(), 0), global};
}

slice slice_along(const ckpt::shape& global, std::size_t dim, int index, int count) {
  if (global.empty()) return whole(global);
  if (dim >= global.size() || count < 1 || index < 0 || index >= count) {
    throw std::invalid_argument("slice_along: part " + std::to_string(index) + " of " +
                                std::to_string(count) + " along dimension " + std::to_string(dim) +
                                " of " + shape_to_string(global));
  }
  const std::int64_t n = global[dim], c = count, i = index;
  const std::int64_t base = n / c, rem = n % c;
  slice s = whole(global);
  s.offset[dim] = i * base + std::min(i, rem);
  s.extent[dim] = base + (i < rem ? 1 : 0);
  return s;
}

slice row_slice(const ckpt::shape& global, int index, int count) {
  return slice_along(global, 0, index, count);
}

sharded_leaf sharded_leaf::replicated_leaf(std::string path, ckpt::array data) {
  sharded_leaf l;
  l.path = std::move(path);
  l.dtype = data.dtype();
  l.global_shape = data.shape();
  l.shards.push_back({whole(data.shape()), std::move(data)});
  l.replicated = true;
  return l;
}

result<sharded_leaf> sharded_leaf::spec(std::string path, ckpt::dtype dtype,
                                        ckpt::shape global_shape,
                                        const std::vector<slice>& slices) {
  sharded_leaf l;
  l.path = std::move(path);
  l.dtype = dtype;
  l.global_shape = std::move(global_shape);
  for (const auto& s : slices) {
    CKPT_TRY(auto a, array::spec(dtype, s.extent));
    l.shards.push_back({s, std::move(a)});
  }
  return l;
}

}  // namespace ckpt

namespace ckpt::shard_detail {

format::box to_box(const slice& s) {
  return {s.offset, s.extent};
}

result<void> check_leaf(const sharded_leaf& l, bool need_bytes) {
  const std::string what = "leaf \"" + l.path + "\"";
  if (l.path.empty()) return fail(errc::invalid_argument, "a sharded leaf has an empty path");
  if (!format::is_valid_utf8(l.path)) {
    return fail(errc::invalid_argument, what + ": the path is not valid UTF-8");
  }
  CKPT_TRYV_CTX(split_path(l.path), what);
  CKPT_TRYV_CTX(byte_size(l.dtype, l.global_shape), what);
  if (l.replicated && (l.shards.size() != 1 || l.shards[0].where != whole(l.global_shape))) {
    return fail(errc::invalid_argument,
                what + " is replicated: it needs exactly one shard holding the whole array");
  }
  std::vector<format::box> boxes;
  for (const auto& s : l.shards) {
    const format::box b = to_box(s.where);
    if (b.offset.size() != l.global_shape.size() || b.extent.size() != l.global_shape.size()) {
      return fail(errc::invalid_argument, what + ": slice " + s.where.to_string() + " has not " +
                                              std::to_string(l.global_shape.size()) +
                                              " dimensions");
    }
    for (std::size_t d = 0; d < b.offset.size(); ++d) {
      if (b.offset[d] < 0 || b.extent[d] < 0 || b.offset[d] > l.global_shape[d] ||
          b.extent[d] > l.global_shape[d] - b.offset[d]) {
        return fail(errc::invalid_argument, what + ": slice " + s.where.to_string() +
                                                " is not inside " +
                                                shape_to_string(l.global_shape));
      }
    }
    if (s.data.dtype() != l.dtype || s.data.shape() != s.where.extent) {
      return fail(errc::invalid_argument, what + ": the data of slice " + s.where.to_string() +
                                              " is " + s.data.describe() + ", expected " +
                                              std::string(dtype_name(l.dtype)) +
                                              shape_to_string(s.where.extent));
    }
    if (need_bytes && s.data.is_spec()) {
      return fail(errc::invalid_argument,
                  what + ": slice " + s.where.to_string() + " has no bytes (a template spec)");
    }
    for (const auto& o : boxes) {
      format::box x;
      if (box_nonempty(b) && box_intersect(o, b, x)) {
        return fail(errc::invalid_argument, what + ": this rank's slices " +
                                                format::box_to_string(o) + " and " +
                                                s.where.to_string() + " overlap");
      }
    }
    boxes.push_back(b);
  }
  return success();
}

std::uint64_t unix_ns() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

}  // namespace ckpt::shard_detail
