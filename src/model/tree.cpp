#include <ckpt/tree.hpp>

#include "model/tree_walk.hpp"

#include <charconv>
#include <functional>
#include <stdexcept>

namespace ckpt {
// A dict keeps its items in a vector (insertion order) and, once it has more than a few, an
// open-addressing table of item positions for lookups: no second copy of the keys and no
// allocation per item (parsing a 10^5-leaf index builds many dicts).
struct tree::node {
  std::vector<item> items;           // dict
  std::vector<std::uint32_t> slots;  // dict: item position + 1, 0 = empty; empty below 9 items
  std::vector<tree> elements;        // list

  static constexpr std::size_t linear_max = 8;

  static std::size_t hash(std::string_view k) noexcept { return std::hash<std::string_view>{}(k); }

  // Position of `key` in items, or items.size(). `h` = hash(key), used only with slots.
  std::size_t find(std::string_view key, std::size_t h) const noexcept {
    if (slots.empty()) {
      for (std::size_t i = 0; i < items.size(); ++i) {
        if (items[i].first == key) return i;
      }
      return items.size();
    }
    const std::size_t mask = slots.size() - 1;
    for (h &= mask;; h = (h + 1) & mask) {
      const std::uint32_t s = slots[h];
      if (s == 0) return items.size();
      if (items[s - 1].first == key) return s - 1;
    }
  }
  std::size_t find(std::string_view key) const noexcept {
    return find(key, slots.empty() ? 0 : hash(key));
  }

  // Sizes the table for `n` items (once there are more than linear_max) and places all items.
  void rehash_for(std::size_t n) {
    std::size_t cap = 16;
    while (cap < 4 * n)
      cap *= 2;
    slots.assign(cap, 0);
    for (std::size_t i = 0; i < items.size(); ++i)
      place(i, hash(items[i].first));
  }

  // Indexes the last item, whose key hashes to `h`.
  void index_last(std::size_t h) {
    const std::size_t n = items.size();
    if (slots.empty() && n <= linear_max) return;
    if (slots.size() < 2 * n) {
      rehash_for(n);
    } else {
      place(n - 1, h);
    }
  }

  void place(std::size_t i, std::size_t h) {
    const std::size_t mask = slots.size() - 1;
    h &= mask;
    while (slots[h] != 0)
      h = (h + 1) & mask;
    slots[h] = static_cast<std::uint32_t>(i + 1);
  }
};

tree::tree() noexcept = default;
tree::tree(ckpt::array leaf) : kind_(kind::leaf), leaf_(std::move(leaf)) {}
tree::tree(const tree& o) : kind_(o.kind_), leaf_(o.leaf_) {
  if (o.node_) node_ = std::make_unique<node>(*o.node_);
}
tree::tree(tree&& o) noexcept = default;
tree& tree::operator=(const tree& o) {
  if (this != &o) *this = tree(o);
  return *this;
}
tree& tree::operator=(tree&& o) noexcept = default;
tree::~tree() = default;

tree tree::dict(std::initializer_list<item> items) {
  tree t;
  t.kind_ = kind::dict;
  t.node_ = std::make_unique<node>();
  for (const auto& [k, v] : items) {
    if (t.get(k)) throw std::invalid_argument("ckpt::tree::dict: duplicate key \"" + k + "\"");
    t.set(k, v);
  }
  return t;
}

tree tree::dict(std::vector<item>&& items) {
  tree t;
  t.kind_ = kind::dict;
  t.node_ = std::make_unique<node>();
  for (auto& [k, v] : items) {
    if (t.get(k)) throw std::invalid_argument("ckpt::tree::dict: duplicate key \"" + k + "\"");
    t.set(k, std::move(v));
  }
  return t;
}

tree tree::list(std::vector<tree>&& elements) {
  tree t;
  t.kind_ = kind::list;
  t.node_ = std::make_unique<node>();
  t.node_->elements = std::move(elements);
  return t;
}

tree tree::list(std::initializer_list<tree> elements) {
  tree t;
  t.kind_ = kind::list;
  t.node_ = std::make_unique<node>();
  t.node_->elements.assign(elements.begin(), elements.end());
  return t;
}

const ckpt::array& tree::leaf() const {
  if (kind_ != kind::leaf) throw std::logic_error("ckpt::tree::leaf: node is not a leaf");
  return leaf_;
}
ckpt::array& tree::leaf() {
  if (kind_ != kind::leaf) throw std::logic_error("ckpt::tree::leaf: node is not a leaf");
  return leaf_;
}

tree& tree::set(std::string key, tree value) {
  if (kind_ != kind::dict) throw std::logic_error("ckpt::tree::set: node is not a dict");
  // (Hashed once: a dict with a table, or about to get one, needs the hash twice.)
  const bool hashed = !node_->slots.empty() || node_->items.size() >= node::linear_max;
  const std::size_t h = hashed ? node::hash(key) : 0;
  const std::size_t at = node_->find(key, h);
  if (at < node_->items.size()) {
    auto& slot = node_->items[at].second;
    slot = std::move(value);
    return slot;
  }
  node_->items.emplace_back(std::move(key), std::move(value));
  node_->index_last(h);
  return node_->items.back().second;
}

void tree::reserve(std::size_t n) {
  if (kind_ == kind::dict) {
    node_->items.reserve(n);
    // Size the lookup table up front too, rather than growing it while items are added.
    if (n > node::linear_max && node_->slots.size() < 2 * n) node_->rehash_for(n);
  }
  if (kind_ == kind::list) node_->elements.reserve(n);
}

tree& tree::append(tree value) {
  if (kind_ != kind::list) throw std::logic_error("ckpt::tree::append: node is not a list");
  node_->elements.push_back(std::move(value));
  return node_->elements.back();
}

const tree* tree::get(std::string_view key) const {
  if (kind_ != kind::dict) return nullptr;
  const std::size_t at = node_->find(key);
  return at < node_->items.size() ? &node_->items[at].second : nullptr;
}
tree* tree::get(std::string_view key) {
  return const_cast<tree*>(std::as_const(*this).get(key));
}

const std::vector<tree::item>& tree::items() const noexcept {
  static const std::vector<item> none;
  return kind_ == kind::dict ? node_->items : none;
}
const std::vector<tree>& tree::elements() const noexcept {
  static const std::vector<tree> none;
  return kind_ == kind::list ? node_->elements : none;
}
tree& tree::element(std::size_t i) {
  if (kind_ != kind::list) throw std::logic_error("ckpt::tree::element: node is not a list");
  return node_->elements.at(i);
}
std::size_t tree::size() const noexcept {
  if (kind_ == kind::dict) return node_->items.size();
  if (kind_ == kind::list) return node_->elements.size();
  return 0;
}

namespace {

// The child of `t` named by one unescaped path component, or nullptr.
const tree* child(const tree& t, const std::string& component) {
  if (t.is_dict()) return t.get(component);
  if (t.is_list()) {
    std::size_t i = 0;
    auto [p, ec] = std::from_chars(component.data(), component.data() + component.size(), i);
    if (ec != std::errc() || p != component.data() + component.size() || component.empty() ||
        (component.size() > 1 && component[0] == '0') || i >= t.elements().size()) {
      return nullptr;
    }
    return &t.elements()[i];
  }
  return nullptr;
}

}  // namespace

result<const tree*> tree::at(std::string_view path) const {
  CKPT_TRY(auto parts, split_path(path));
  const tree* t = this;
  std::string walked;
  for (const auto& part : parts) {
    const tree* next = child(*t, part);
    if (!next) {
      return fail(errc::not_found, "no node \"" + escape_key(part) + "\" under \"" + walked +
                                       "\" (looking up \"" + std::string(path) + "\")");
    }
    walked = join_path(walked, escape_key(part));
    t = next;
  }
  return t;
}

const tree* tree::find(std::string_view path) const {
  auto r = at(path);
  return r ? r.value() : nullptr;
}
tree* tree::find(std::string_view path) {
  return const_cast<tree*>(std::as_const(*this).find(path));
}

namespace {

template <class F>
void for_each_leaf(const tree& t, F&& f) {
  if (t.is_leaf()) f(t.leaf());
  for (const auto& [k, v] : t.items())
    for_each_leaf(v, f);
  for (const auto& e : t.elements())
    for_each_leaf(e, f);
}

}  // namespace

std::vector<flat_leaf> tree::flatten() const {
  std::vector<flat_leaf> out;
  out.reserve(num_leaves());
  detail::for_each_leaf_path(*this, [&](const std::string& path, const ckpt::array& a) {
    out.push_back({path, a});
  });
  return out;
}

std::size_t tree::num_leaves() const noexcept {
  std::size_t n = 0;
  for_each_leaf(*this, [&](const ckpt::array&) { ++n; });
  return n;
}

std::uint64_t tree::num_bytes() const noexcept {
  std::uint64_t n = 0;
  for_each_leaf(*this, [&](const ckpt::array& a) { n += a.num_bytes(); });
  return n;
}

bool tree::same_structure(const tree& o) const noexcept {
  if (kind_ != o.kind_ || size() != o.size()) return false;
  switch (kind_) {
    case kind::none:
      return true;
    case kind::leaf:
      return leaf_.dtype() == o.leaf_.dtype() && leaf_.shape() == o.leaf_.shape();
    case kind::dict:
      for (std::size_t i = 0; i < node_->items.size(); ++i) {
        const auto& [k, v] = node_->items[i];
        const auto& [ok, ov] = o.node_->items[i];
        if (k != ok || !v.same_structure(ov)) return false;
      }
      return true;
    case kind::list:
      for (std::size_t i = 0; i < node_->elements.size(); ++i) {
        if (!node_->elements[i].same_structure(o.node_->elements[i])) return false;
      }
      return true;
  }
  return false;
}

bool operator==(const tree& a, const tree& b) noexcept {
  if (!a.same_structure(b)) return false;
  auto x = a.flatten(), y = b.flatten();
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (!(x[i].array == y[i].array)) return false;
  }
  return true;
}

namespace {

result<tree> rebuild(const tree& s, std::vector<ckpt::array>& leaves, std::size_t& next) {
  switch (s.type()) {
    case tree::kind::none:
      return tree();
    case tree::kind::leaf:
      if (next >= leaves.size()) {
        return fail(errc::invalid_argument, "unflatten: more leaves in the structure than given (" +
                                                std::to_string(leaves.size()) + ")");
      }
      return tree(std::move(leaves[next++]));
    case tree::kind::dict: {
      tree t = tree::dict();
      for (const auto& [k, v] : s.items()) {
        CKPT_TRY(tree c, rebuild(v, leaves, next));
        t.set(k, std::move(c));
      }
      return t;
    }
    case tree::kind::list: {
      tree t = tree::list();
      for (const auto& e : s.elements()) {
        CKPT_TRY(tree c, rebuild(e, leaves, next));
        t.append(std::move(c));
      }
      return t;
    }
  }
  return tree();
}

}  // namespace

result<tree> unflatten(const tree& structure, std::vector<ckpt::array> leaves) {
  std::size_t next = 0;
  CKPT_TRY(tree t, rebuild(structure, leaves, next));
  if (next != leaves.size()) {
    return fail(errc::invalid_argument, "unflatten: structure has " + std::to_string(next) +
                                            " leaves, given " + std::to_string(leaves.size()));
  }
  return t;
}

std::string escape_key(std::string_view key) {
  std::string out;
  out.reserve(key.size());
  for (char c : key) {
    if (c == '~')
      out += "~0";
    else if (c == '/')
      out += "~1";
    else
      out += c;
  }
  return out;
}

result<std::string> unescape_key(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '~') {
      out += s[i];
      continue;
    }
    if (i + 1 < s.size() && (s[i + 1] == '0' || s[i + 1] == '1')) {
      out += s[i + 1] == '0' ? '~' : '/';
      ++i;
    } else {
      return fail(errc::invalid_argument,
                  "bad escape in path component \"" + std::string(s) + "\" ('~' must be ~0 or ~1)");
    }
  }
  return out;
}

std::string join_path(std::string_view parent, std::string_view escaped_component) {
  if (parent.empty()) return std::string(escaped_component);
  std::string p(parent);
  p += '/';
  p += escaped_component;
  return p;
}

result<std::vector<std::string>> split_path(std::string_view path) {
  std::vector<std::string> parts;
  if (path.empty()) return parts;
  std::size_t start = 0;
  while (true) {
    std::size_t slash = path.find('/', start);
    std::string_view part =
        path.substr(start, slash == std::string_view::npos ? slash : slash - start);
    CKPT_TRY(std::string un, unescape_key(part));
    parts.push_back(std::move(un));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return parts;
}

}  // namespace ckpt
