"""optim.graph: traced graph IR, rewrite passes, cost model, memory planning, ONNX."""
from optim.graph.execute import execute
from optim.graph.ir import Graph, GraphError, Node, TensorType, validate
from optim.graph.trace import trace
