//! Loads libspn with `libloading` (no link-time dependency), checks the ABI, generates images and writes
//! them as PNG: `spn-rust-host LIBSPN MODEL OUT_DIR [COUNT]`.
use libloading::{Library, Symbol};
use std::ffi::{c_char, c_int, c_void, CStr, CString};

const SPN_ABI_VERSION: u32 = 1;

/// Mirrors of the structs in include/spn.h this host uses.
#[repr(C)]
struct SampleParams {
    struct_size: u32,
    count: u32,
    seed: u64,
    temperature: f32,
    batch_size: u32,
    progress: Option<extern "C" fn(*mut c_void, u64, u64) -> c_int>,
    user_data: *mut c_void,
    job: *mut c_void,
}

#[repr(C)]
struct Image {
    width: u32,
    height: u32,
    channels: u32,
    stride: usize,
    data: *mut u8,
    seed: u64,
    bits: f64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: {} LIBSPN MODEL OUT_DIR [COUNT]", args[0]);
        std::process::exit(2);
    }
    let count: u32 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(2);
    // SAFETY: `args[1]` is meant to be libspn; each symbol is read with the signature include/spn.h gives it,
    // after the ABI version check, and `lib` outlives every symbol and pointer taken from it (one scope).
    unsafe {
        let lib = Library::new(&args[1])?;
        let abi: Symbol<extern "C" fn() -> u32> = lib.get(b"spn_abi_version")?;
        let init: Symbol<extern "C" fn(u32) -> c_int> = lib.get(b"spn_init")?;
        let last_error: Symbol<extern "C" fn() -> *const c_char> = lib.get(b"spn_last_error")?;
        let err = || CStr::from_ptr(last_error()).to_string_lossy().into_owned();
        if abi() < SPN_ABI_VERSION || init(SPN_ABI_VERSION) != 0 {
            return Err(format!("libspn ABI {} is too old: {}", abi(), err()).into());
        }
        let load: Symbol<extern "C" fn(*const c_char, *const c_void, *mut *mut c_void) -> c_int> =
            lib.get(b"spn_model_load")?;
        let free_model: Symbol<extern "C" fn(*mut c_void)> = lib.get(b"spn_model_free")?;
        let params_init: Symbol<extern "C" fn(*mut SampleParams)> =
            lib.get(b"spn_sample_params_init")?;
        let generate: Symbol<
            extern "C" fn(*const c_void, *const SampleParams, *mut *mut Image, *mut u32) -> c_int,
        > = lib.get(b"spn_generate")?;
        let write_png: Symbol<extern "C" fn(*const Image, *const c_char) -> c_int> =
            lib.get(b"spn_image_write_png")?;
        let images_free: Symbol<extern "C" fn(*mut Image, u32)> = lib.get(b"spn_images_free")?;

        let path = CString::new(args[2].as_str())?;
        let mut model = std::ptr::null_mut();
        if load(
            if args[2].is_empty() {
                std::ptr::null()
            } else {
                path.as_ptr()
            },
            std::ptr::null(),
            &mut model,
        ) != 0
        {
            return Err(format!("cannot load the model: {}", err()).into());
        }
        let mut p: SampleParams = std::mem::zeroed();
        params_init(&mut p);
        p.count = count;
        let (mut images, mut n) = (std::ptr::null_mut(), 0u32);
        if generate(model, &p, &mut images, &mut n) != 0 {
            return Err(format!("generation failed: {}", err()).into());
        }
        for im in std::slice::from_raw_parts(images, n as usize) {
            let out = CString::new(format!("{}/rust-asset-{}.png", args[3], im.seed))?;
            if write_png(im, out.as_ptr()) != 0 {
                return Err(err().into());
            }
            println!(
                "{} {}x{} {:.1} bits",
                out.to_string_lossy(),
                im.width,
                im.height,
                im.bits
            );
        }
        images_free(images, n);
        free_model(model);
    }
    Ok(())
}
