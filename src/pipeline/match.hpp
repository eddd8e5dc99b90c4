// The one template matcher: what a caller asks for (a template tree's leaves, or the leaves a
// sharded load wants) against what a checkpoint holds, every mismatch reported at once.
// Internal header.
#pragma once

#include <ckpt/array.hpp>
#include <ckpt/error.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ckpt::pipeline {

/// A leaf by path, dtype and shape.
struct leaf_desc {
  std::string_view path;
  ckpt::dtype dtype;
  std::span<const std::int64_t> shape;
};

struct match_words {
  std::string_view asked = "template";  ///< what the caller passed ("template", "wanted")
  std::string_view header = "the template does not match the checkpoint";
  bool report_unasked = true;  ///< saved leaves nothing asked for are mismatches too
};

/// For each asked leaf, the index of the saved leaf with its path, dtype and shape, or -1 where
/// there is none (partial mode only). Outside partial mode every missing leaf, every dtype or
/// shape difference and (report_unasked) every saved leaf not asked for is listed in one
/// errc::template_mismatch error, prefixed with `where`.
result<std::vector<std::int64_t>> match_leaves(std::span<const leaf_desc> asked,
                                               std::span<const leaf_desc> saved, bool partial,
                                               const match_words& words, const std::string& where);

}  // namespace ckpt::pipeline
