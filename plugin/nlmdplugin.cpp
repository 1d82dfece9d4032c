/* Registration of every pair style nlmd provides, from one shared object (nlmdplugin.so).
   LAMMPS auto-loads files ending in "plugin.so" from LAMMPS_PLUGIN_PATH. */
#include "lammpsplugin_abi.h"

#include "pair_e3gnn_nlmd.h"
#include "pair_e3gnn_parallel.h"
#include "pair_e3gnn_sevenn.h"

#include "error.h"
#include "lammps.h"
#include "library.h"
#include "lmptype.h"

#include <cstring>

using namespace LAMMPS_NS;

/* The integer sizes (bigint, tagint, imageint) this plugin was compiled with, by the same keywords as
   lammps_extract_setting(): they fix the layout of LAMMPS's classes, so they must be those of the LAMMPS
   that loads the plugin (CMakeLists.txt takes them from the LAMMPS::lammps target;
   tests/test_plugin_build.py compares them with the library's). -1 for another keyword. */
extern "C" __attribute__((visibility("default"))) int nlmd_plugin_integer_size(const char *keyword)
{
  if (strcmp(keyword, "bigint") == 0) return (int) sizeof(bigint);
  if (strcmp(keyword, "tagint") == 0) return (int) sizeof(tagint);
  if (strcmp(keyword, "imageint") == 0) return (int) sizeof(imageint);
  return -1;
}

static Pair *e3gnn_creator(LAMMPS *lmp)
{
  return new PairE3GNNnlmd(lmp);
}

static Pair *e3gnn_sevenn_creator(LAMMPS *lmp)
{
  return new PairE3GNNSevenn(lmp);
}

static Pair *e3gnn_parallel_creator(LAMMPS *lmp)
{
  return new PairE3GNNParallel(lmp);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  auto register_plugin = (lammpsplugin_regfunc) regfunc;

  // a plugin compiled with other integer sizes than the LAMMPS that loads it would read and write its
  // atoms at the wrong offsets: refuse it (the settings are answered without an instance, LAMMPS checks
  // the handle only after them)
  for (const char *keyword : {"bigint", "tagint", "imageint"}) {
    const int host = lammps_extract_setting(nullptr, keyword);
    if (host != nlmd_plugin_integer_size(keyword))
      ((LAMMPS *) lmp)
          ->error->all(FLERR,
                       "nlmdplugin.so was compiled for {}-byte {} ({}) but this LAMMPS uses {} bytes: build the "
                       "plugin against the LAMMPS that loads it (docs/install.md)",
                       nlmd_plugin_integer_size(keyword), keyword, NLMD_LAMMPS_SIZES, host);
  }
  lammpsplugin_t plugin;

  plugin.version = NLMD_LAMMPS_VERSION;
  plugin.style = "pair";
  plugin.name = "e3gnn";
  plugin.info = "e3gnn: SevenNet serial deployment on one MPI rank (nlmd plugin)";
  plugin.author = "nlmd developers; SevenNet pair style by Yutack Park (SNU)";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &e3gnn_creator;
  plugin.handle = handle;
  (*register_plugin)(&plugin, lmp);

  plugin.name = "e3gnn/sevenn";
  plugin.info = "e3gnn/sevenn: SevenNet " NLMD_SEVENN_VERSION " serial pair style compiled from the installed sevenn "
                "(nlmd plugin)";
  plugin.author = "SevenNet pair style by Yutack Park (SNU); checks by nlmd developers";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &e3gnn_sevenn_creator;
  (*register_plugin)(&plugin, lmp);

  plugin.name = "e3gnn/parallel";
  plugin.info = "e3gnn/parallel: SevenNet parallel deployment on many MPI ranks, layer-wise ghost exchange "
                "(nlmd plugin)";
  plugin.author = "nlmd developers";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &e3gnn_parallel_creator;
  (*register_plugin)(&plugin, lmp);
}
