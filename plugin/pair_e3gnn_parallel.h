/* pair_style e3gnn/parallel: SevenNet's layer-wise parallel deployment (deployed_parallel/, one TorchScript
   file per message-passing layer) on any number of MPI ranks of an unpatched LAMMPS.

   The graph of a rank has its local atoms as centres and every atom within the model cutoff, local or ghost,
   as neighbours; ghost atoms are needed to one cutoff only. Between two layers the features of the ghost
   atoms are refreshed from their owners (Comm::forward_comm through pack/unpack_forward_comm), and in the
   backward pass the gradients on ghost features are summed into their owners (Comm::reverse_comm), so that
   energy, forces and virial equal those of the serial model. Graph nodes are LAMMPS atom indices, not tags:
   every periodic image of an atom is its own ghost node, filled by the same communication (also with
   itself on one rank), so no tag map, no consecutive ids and no special case for small cells is needed.

   Syntax (SevenNet's):  pair_style e3gnn/parallel
                         pair_coeff * * <num_layers> <deployed_parallel dir> <element of type 1> ...
   Requires newton_pair on and comm_style brick. */
#ifndef NLMD_PAIR_E3GNN_PARALLEL_H
#define NLMD_PAIR_E3GNN_PARALLEL_H

#include "pair_e3gnn_base.h"

#include <torch/script.h>

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
  double init_one(int, int) override;

  // per-atom feature (forward) and feature-gradient (reverse) exchange, comm_dim doubles per atom
  int pack_forward_comm(int, int *, double *, int, int *) override;
  void unpack_forward_comm(int, int, double *) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;

 private:
  std::vector<torch::jit::Module> layers;    // one TorchScript module per message-passing layer
  std::vector<std::string> layer_paths;
  std::vector<int> boundary_dim;    // width of the node features handed from layer k to layer k+1
  double cutoff = 0.0;
  int comm_size = 0;                // widest per-atom feature (metadata), sizes the comm buffers
  torch::Device device;
  std::string device_name;

  // exchange buffer: comm_dim doubles for every local and ghost atom, row = LAMMPS atom index
  std::vector<double> comm_buf;
  int comm_dim = 0;

  void select_device();
  void load_layers(const std::vector<std::string> &paths);
  void probe_layers();
  void exchange_features(const torch::Tensor &x_local, int nlocal, int nall,
                         const std::vector<int> &ghost_atoms, torch::Tensor &x_ghost, int dim);
  void exchange_gradients(const torch::Tensor &g_ghost, int nlocal, int nall,
                          const std::vector<int> &ghost_atoms, torch::Tensor &g_local, int dim);
  std::string model_description() const;
};

}    // namespace LAMMPS_NS

#endif
