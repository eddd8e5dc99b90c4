// ckpt/tree.hpp - the PyTree analogue: None, an array leaf, an ordered dict, or a list.
//
// Paths name nodes: dict keys and list indices joined with '/', e.g. "params/layers/0/w".
// A key holding '~' or '/' is escaped JSON-Pointer style ('~' -> "~0", '/' -> "~1"), so every
// path splits back into exactly the keys it was made of. The root's path is "".
#pragma once

#include <ckpt/array.hpp>
#include <ckpt/error.hpp>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ckpt {

class tree;

/// One leaf of a flattened tree.
struct flat_leaf {
  std::string path;
  ckpt::array array;
};

class tree {
 public:
  enum class kind : std::uint8_t { none, leaf, dict, list };
  using item = std::pair<std::string, tree>;

  /// None.
  tree() noexcept;
  /// A leaf.
  tree(ckpt::array leaf);  // NOLINT(google-explicit-constructor): trees read like literals
  tree(const tree& other);
  tree(tree&& other) noexcept;
  tree& operator=(const tree& other);
  tree& operator=(tree&& other) noexcept;
  ~tree();

  /// An empty dict, or one built from items in order: `tree::dict({{"w", w}, {"b", b}})`.
  /// Duplicate keys are a programming error (std::invalid_argument). An initializer list is
  /// const, so each value is copied: leaves share their memory, but a dict or list value is
  /// copied node by node. To nest deep trees without copies, use set()/append() or the
  /// std::vector overloads with std::move'd values.
  static tree dict(std::initializer_list<item> items = {});
  /// The same, moving the values out of `items`.
  static tree dict(std::vector<item>&& items);
  /// An empty list, or one built from elements in order (copied, as for dict).
  static tree list(std::initializer_list<tree> elements = {});
  /// The same, moving the elements.
  static tree list(std::vector<tree>&& elements);

  kind type() const noexcept { return kind_; }
  bool is_none() const noexcept { return kind_ == kind::none; }
  bool is_leaf() const noexcept { return kind_ == kind::leaf; }
  bool is_dict() const noexcept { return kind_ == kind::dict; }
  bool is_list() const noexcept { return kind_ == kind::list; }

  /// The leaf; std::logic_error if this is not a leaf.
  const ckpt::array& leaf() const;
  ckpt::array& leaf();

  /// Dict: inserts `key` (at the end) or replaces its value; returns the stored value.
  /// std::logic_error when this is not a dict.
  tree& set(std::string key, tree value);
  /// List: appends; returns the stored value. std::logic_error when this is not a list.
  tree& append(tree value);
  /// Dict: the child under `key`, or nullptr.
  const tree* get(std::string_view key) const;
  tree* get(std::string_view key);
  /// Dict items in insertion order (empty for other kinds).
  const std::vector<item>& items() const noexcept;
  /// List elements in order (empty for other kinds).
  const std::vector<tree>& elements() const noexcept;
  tree& element(std::size_t i);
  /// Children of a dict or list; 0 otherwise.
  std::size_t size() const noexcept;
  /// Reserves room for `n` children of a dict or list (no effect on other kinds).
  void reserve(std::size_t n);

  /// The node at `path` (see the header comment), or nullptr.
  const tree* find(std::string_view path) const;
  tree* find(std::string_view path);
  /// Like find, with an error naming the first missing component.
  result<const tree*> at(std::string_view path) const;

  /// Leaves in deterministic depth-first order (dict insertion order, list index order).
  std::vector<flat_leaf> flatten() const;
  std::size_t num_leaves() const noexcept;
  /// Sum of the leaves' byte sizes.
  std::uint64_t num_bytes() const noexcept;

  /// Same kinds, keys, list lengths, leaf dtypes and shapes (bytes not compared).
  bool same_structure(const tree& other) const noexcept;
  /// Same structure and the same leaf bytes.
  friend bool operator==(const tree& a, const tree& b) noexcept;

 private:
  struct node;
  kind kind_ = kind::none;
  ckpt::array leaf_;
  std::unique_ptr<node> node_;
};

/// Rebuilds a tree shaped like `structure` whose leaves are `leaves` in flatten() order.
/// Errors when the count differs.
result<tree> unflatten(const tree& structure, std::vector<ckpt::array> leaves);

/// '~' -> "~0", '/' -> "~1".
std::string escape_key(std::string_view key);
/// The inverse; a '~' not followed by '0' or '1' is `errc::invalid_argument`.
result<std::string> unescape_key(std::string_view escaped);
/// Joins a parent path and an already escaped component.
std::string join_path(std::string_view parent, std::string_view escaped_component);
/// Splits a path into unescaped components ("" -> no components).
result<std::vector<std::string>> split_path(std::string_view path);

}  // namespace ckpt
