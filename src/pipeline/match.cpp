#include "pipeline/match.hpp"

#include <algorithm>
#include <optional>
#include <unordered_map>

namespace ckpt::pipeline {

namespace {
std::string describe(const leaf_desc& l) {
  return std::string(dtype_name(l.dtype)) + shape_to_string(l.shape);
}
}  // namespace

result<std::vector<std::int64_t>> match_leaves(std::span<const leaf_desc> asked,
                                               std::span<const leaf_desc> saved, bool partial,
                                               const match_words& words, const std::string& where) {
  // A template usually lists the leaves in the checkpoint's own order (both come from
  // tree::flatten): each is looked for at its own place first, and the map of saved paths
  // (unique, as the index checks) is built only once one is not there.
  std::unordered_map<std::string_view, std::size_t> by_path;
  auto find = [&](std::size_t a, std::string_view path) -> std::optional<std::size_t> {
    if (a < saved.size() && saved[a].path == path) return a;
    if (by_path.empty()) {
      by_path.reserve(saved.size());
      for (std::size_t i = 0; i < saved.size(); ++i)
        by_path.emplace(saved[i].path, i);
    }
    auto it = by_path.find(path);
    if (it == by_path.end()) return std::nullopt;
    return it->second;
  };
  std::vector<std::int64_t> out(asked.size(), -1);
  std::vector<std::string> problems;
  std::vector<bool> named(saved.size(), false);  // asked for by path (matched or not)
  for (std::size_t a = 0; a < asked.size(); ++a) {
    const auto& w = asked[a];
    const auto found = find(a, w.path);
    if (!found) {
      if (!partial) {
        problems.push_back("missing in checkpoint: \"" + std::string(w.path) + "\" (" +
                           std::string(words.asked) + " " + describe(w) + ")");
      }
      continue;
    }
    named[*found] = true;
    const auto& s = saved[*found];
    if (s.dtype != w.dtype ||
        !std::equal(s.shape.begin(), s.shape.end(), w.shape.begin(), w.shape.end())) {
      if (!partial) {
        problems.push_back("\"" + std::string(w.path) + "\": " + std::string(words.asked) + " " +
                           describe(w) + ", checkpoint " + describe(s));
      }
      continue;
    }
    out[a] = static_cast<std::int64_t>(*found);
  }
  if (!partial && words.report_unasked) {
    for (std::size_t i = 0; i < saved.size(); ++i) {
      if (!named[i]) {
        problems.push_back("not in " + std::string(words.asked) + ": \"" +
                           std::string(saved[i].path) + "\" (checkpoint " + describe(saved[i]) +
                           ")");
      }
    }
  }
  if (!problems.empty()) {
    std::string msg = where + ": " + std::string(words.header) + " (" +
                      std::to_string(problems.size()) + " mismatch" +
                      (problems.size() == 1 ? "" : "es") + "):";
    for (const auto& p : problems)
      msg += "\n  " + p;
    return fail(errc::template_mismatch, std::move(msg));
  }
  return out;
}

}  // namespace ckpt::pipeline
