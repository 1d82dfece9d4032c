/* pair_style e3gnn/parallel: SevenNet's layer-wise parallel deployment (deployed_parallel/, one TorchScript
   file per message-passing layer) on any number of MPI ranks of an unpatched LAMMPS.

   The graph of a rank has its local atoms as centres and every atom within the model cutoff, local or ghost,
   as neighbours; ghost atoms are needed to one cutoff only. Between two layers the features of the ghost
   atoms are refreshed from their owners (Comm::forward_comm through pack/unpack_forward_comm), and in the
   backward pass the gradients on ghost features are summed into their owners (Comm::reverse_comm), so that
   energy, forces and virial equal those of the serial model. Graph nodes are LAMMPS atom indices, not tags:
   every periodic image of an atom is its own ghost node, filled by the same communication (also with
   itself on one rank), so no tag map, no consecutive ids and no special case for small cells is needed.

   The graph and the tally are PairE3GNNBase's (GHOST_NODES), the layer-by-layer model call
   nlmd::LayeredModel's (layered_model.h); this class adds the syntax, the checks of the layer files and the
   exchange through LAMMPS's communication.

   Syntax (SevenNet's):  pair_style e3gnn/parallel [torchscript]
                         pair_coeff * * <num_layers> <deployed_parallel dir> <element of type 1> ...
   When the directory also holds the layers compiled by `nlmd deploy` (layer_<k>_forward.pt2 ..., for the
   device of this run), they run instead of the TorchScript files; `torchscript` keeps the TorchScript files.
   Requires newton_pair on and comm_style brick. */
#ifndef NLMD_PAIR_E3GNN_PARALLEL_H
#define NLMD_PAIR_E3GNN_PARALLEL_H

#include "layered_model.h"
#include "pair_e3gnn_base.h"

#include <string>
#include <vector>

namespace LAMMPS_NS {

class PairE3GNNParallel : public PairE3GNNBase {
 public:
  PairE3GNNParallel(class LAMMPS *);

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;

  // per-atom feature (forward) and feature-gradient (reverse) exchange, comm_dim doubles per atom
  int pack_forward_comm(int, int *, double *, int, int *) override;
  void unpack_forward_comm(int, int, double *) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;

 private:
  nlmd::LayeredModel model;
  int comm_size = 0;                // widest per-atom feature (metadata), sizes the comm buffers
  bool use_packages = true;         // run the compiled layers when the deployment has them

  // exchange buffer: comm_dim doubles for every local and ghost atom, row = LAMMPS atom index
  std::vector<double> comm_buf;
  int comm_dim = 0;

  // nlmd::GhostExchange through Comm::forward_comm / reverse_comm; the ghost nodes are node_atom[nlocal:]
  struct Exchange : nlmd::GhostExchange {
    PairE3GNNParallel *pair;
    explicit Exchange(PairE3GNNParallel *p) : pair(p) {}
    void forward(const float *centres, int dim, float *ghosts) override;
    void reverse(const float *ghosts, int dim, float *centres) override;
  };
  Exchange exchange{this};
  std::string model_description() const;
};

}    // namespace LAMMPS_NS

#endif
