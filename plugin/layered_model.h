/* SevenNet's layer-wise parallel deployment (deployed_parallel/, one TorchScript file per message-passing
   layer) as a function of a graph whose ghost nodes are refreshed between layers by a GhostExchange. No
   LAMMPS here: pair_e3gnn_parallel.cpp drives it and does the exchange with LAMMPS's communication.

   How SevenNet's parallel deployment is cut: deployed_parallel_<k>.pt holds message-passing layer k (layer 0
   also embeds the atom types of local and ghost atoms, the last layer also reduces to the energy). A layer
   takes a dictionary with the features of the local atoms ("x"), of the ghost atoms ("x_ghost"), the
   self-connection term carried over from the previous layer ("self_cont_tmp"), the edges ("edge_index":
   row 0 the centre, always local, row 1 the neighbour as an index into [local; ghost]) and the edge vectors
   ("edge_vec" = x_neighbour - x_centre); it returns the new local features, or the energy.

   Forward: layer 0 runs on atom types; before every later layer the local features go to the exchange, which
   gives back the features of the ghost nodes from their owners. Each layer's inputs are detached leaves, so
   every layer is its own autograd graph. Backward, last layer first: the gradient of the layer's output with
   respect to its edge vectors is added to dE/d(edge_vec); the gradient with respect to its ghost features goes
   to the exchange, which sums it on the owners, and with the gradient with respect to the local features is
   the gradient flowing into the previous layer's output.

   Compiled layers (load_packages) follow the same order without autograd: the forward package of layer k
   returns, besides its features, the intermediate tensors its gradient package takes back in the backward
   pass, and the last layer's package gives the energy and all its gradients at once. */
#ifndef NLMD_LAYERED_MODEL_H
#define NLMD_LAYERED_MODEL_H

#include "e3gnn_model.h"

#include <memory>
#include <string>
#include <vector>

namespace nlmd {

// The ghost-node exchange between the layers, `dim` floats per node; every process of a run calls it the
// same number of times with the same widths, also one without atoms.
class GhostExchange {
 public:
  virtual ~GhostExchange() = default;
  // features of the centre nodes in, features of the ghost nodes (from their owners) out
  virtual void forward(const float *centres, int dim, float *ghosts) = 0;
  // gradients on the ghost nodes in (nullptr: all zero), their sums on the owners out, per centre node
  virtual void reverse(const float *ghosts, int dim, float *centres) = 0;
};

class LayeredModel {
 public:
  LayeredModel();
  ~LayeredModel();

  // the layer files, in order, on `device` (`oeq`: register the autograd of OpenEquivariance kernels)
  void load(const std::vector<std::string> &paths, Device device, bool oeq);

  /* The layers compiled ahead of time (python/nlmd/aot_layers.py has the calling convention), for the device
     given to load(): `forward[k]` and `gradient[k]` for every layer but the last, `forward.back()` the last
     layer's package (energy and every gradient). Graphs with fewer than two local atoms, ghost atoms or
     edges, which the packages are not compiled for, still go through the TorchScript layers. */
  void load_packages(const std::vector<std::string> &forward, const std::vector<std::string> &gradient);
  bool compiled() const;

  /* Runs the layers once on a three-atom graph (two centres, one ghost node): this learns the width of the
     features exchanged at every layer boundary (processes without atoms need it to take part in the
     exchange) and checks that the files form one model of a cutoff `cutoff` whose features fit in
     `comm_size` numbers per atom: only the last layer may give the energy. */
  void probe(double cutoff, int comm_size);

  int num_layers() const { return (int) paths_.size(); }
  // features per atom handed from layer k to layer k + 1
  const std::vector<int> &boundary_dims() const { return boundary_dim_; }

  // energy, d energy / d edge vector and, when `want_atomic`, the per-atom energies of the centres
  void evaluate(const Graph &graph, bool want_atomic, GhostExchange &exchange, Evaluation &out);

 private:
  void evaluate_compiled(const Graph &graph, bool want_atomic, GhostExchange &exchange, Evaluation &out);

  struct Torch;
  std::unique_ptr<Torch> torch_;
  std::vector<std::string> package_paths_;
  std::vector<std::string> paths_;
  std::vector<int> boundary_dim_;
  Device device_;
};

}    // namespace nlmd

#endif
