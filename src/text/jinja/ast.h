// Syntax tree of a parsed template. One Node type with a kind tag keeps the tree compact; the fields a kind uses
// are listed next to it. Every node carries the line and column of its first token for error messages.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "text/jinja/value.h"

namespace vlm::jinja {

struct Node;
using NodePtr = std::unique_ptr<Node>;
using NodeList = std::vector<NodePtr>;

enum class NodeKind : uint8_t {
  // expressions
  kConst,      // value
  kName,       // name
  kTuple,      // items
  kList,       // items
  kDict,       // items: key, value, key, value ...
  kGetattr,    // a . name
  kGetitem,    // a [ b ]
  kSlice,      // a [ items[0] : items[1] : items[2] ]  (null items = omitted)
  kCall,       // a ( items, kwargs, dyn_args = b, dyn_kwargs = c )
  kFilter,     // a | name ( items, kwargs )   (a null inside a filter block)
  kTest,       // a is name ( items, kwargs )
  kNot,        // not a
  kNeg,        // - a
  kPos,        // + a
  kBinOp,      // a op b: + - * / // % **
  kAnd,        // a and b
  kOr,         // a or b
  kConcat,     // items joined by ~
  kCompare,    // a, then ops (name) with operands items
  kCondExpr,   // b if a else c (c may be null)
  // statements
  kData,       // literal text: name
  kOutput,     // {{ a }}
  kFor,        // for target=a in iter=b [if cond=c] body / else_body; recursive flag
  kIf,         // if a body else else_body (elif = a nested kIf as the only else_body node)
  kSet,        // set target=a = b
  kSetBlock,   // set target=a [| filter=c] body endset
  kMacro,      // macro name(params) body
  kCallBlock,  // call(params) a body
  kFilterBlock,  // filter c body  (c is a kFilter chain whose innermost input is null)
  kWith,       // with items (targets) = kwargs-like values in items2; body
  kBreak,
  kContinue,
  kScope,      // body in its own scope ({% generation %} renders as a plain block)
};

struct Param {
  std::string name;
  NodePtr default_value;  // may be null
};

struct Node {
  NodeKind kind;
  int line = 0, col = 0;
  std::string name;
  Value value;
  NodePtr a, b, c;
  NodeList items;
  NodeList items2;
  std::vector<std::pair<std::string, NodePtr>> kwargs;
  std::vector<std::string> ops;  // kCompare operators
  NodeList body, else_body;
  std::vector<Param> params;     // kMacro / kCallBlock
  bool recursive = false;        // kFor
  // kMacro: whether the body reads `caller`, `varargs`, `kwargs` (jinja2 decides arity from this).
  bool uses_caller = false, uses_varargs = false, uses_kwargs = false;

  Node(NodeKind k, int l, int c_) : kind(k), line(l), col(c_) {}
};

}  // namespace vlm::jinja
